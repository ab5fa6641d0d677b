"""The clearing engine: a request's ranked candidates and pass-over reasons, from the book.

`clear` serves requests: it reads only as much of the book as the ranking needs (see
`clearing.rank`), so `passed_over` lists the offers it read and disqualified, and `outranked`
counts the qualifying offers it read but did not rank (a lower bound on all of them). When fewer
than `depth` offers qualify it has read every offer considered; so when none qualifies, the
reason counts are complete for the 503's details. `explain` reads every offer, for quotes and
clearing records.

Offers considered: those of `req.model`, or of every model for "auto". For "auto" with
`min_quality`, models none of whose offers reach it are skipped unread, and read only when
nothing qualifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clearing.index import BookIndex, ModelBook
from clearing.prices import candidate, enough, ratios
from clearing.rank import Ranked, scan, walk
from clearing.types import PASS_REASONS, Clearing, OfferLive, PassedOver, PriceRule, Requirements

AUTO = "auto"


def clear(
    index: BookIndex,
    live: Mapping[str, OfferLive],
    req: Requirements,
    *,
    price_rule: PriceRule = "pay_as_ask",
    depth: int = 5,
    now_ms: int = 0,
) -> Clearing:
    """The winner and up to `depth - 1` fallbacks for `req`, cheapest first.

    Args:
        index: the book.
        live: live state by offer ref; an absent ref is idle and healthy.
        req: the request's requirements.
        price_rule: how candidates are charged (`clearing.prices`).
        depth: how many candidates to rank, at least 1.
        now_ms: the time of clearing. Liveness (TTLs, cool-downs) arrives already applied to
            `index` and `live`, so the ranking does not depend on it today; it is an argument
            so that the engine never reads a clock.

    Raises:
        ValueError: `depth` is below 1.
    """
    if depth < 1:
        raise ValueError("depth must be at least 1")
    books, skipped = _considered(index, req)
    found = walk(books, live, req, enough(price_rule, depth), least=depth)
    passed = found.passed
    if not found.qualifying and skipped:
        passed = passed + scan(skipped, live, req).passed
    prefix = found.qualifying[: found.final]
    return _clearing(req, price_rule, prefix, depth, passed, len(found.qualifying))


def explain(
    index: BookIndex,
    live: Mapping[str, OfferLive],
    req: Requirements,
    *,
    price_rule: PriceRule = "pay_as_ask",
    depth: int | None = None,
) -> Clearing:
    """Every offer considered for `req`, each ranked or passed over with its reason.

    `depth` None ranks every qualifying offer; otherwise the rest count as `outranked`.

    Raises:
        ValueError: `depth` is below 1.
    """
    if depth is not None and depth < 1:
        raise ValueError("depth must be at least 1")
    books, skipped = _considered(index, req)
    found = scan([*books, *skipped], live, req)
    count = len(found.qualifying) if depth is None else depth
    qualifying = found.qualifying
    return _clearing(req, price_rule, qualifying, count, found.passed, len(qualifying))


def _considered(index: BookIndex, req: Requirements) -> tuple[list[ModelBook], list[ModelBook]]:
    """The books to walk, and the books that cannot hold a qualifying offer (skipped)."""
    if req.model != AUTO:
        return index.books(req.model), []
    books = index.books()
    if req.min_quality is None:
        return books, []
    floor = req.min_quality
    walked = [book for book in books if book.best_quality() >= floor]
    return walked, [book for book in books if book.best_quality() < floor]


def _clearing(
    req: Requirements,
    rule: PriceRule,
    prefix: Sequence[Ranked],
    depth: int,
    passed: list[PassedOver],
    qualifying: int,
) -> Clearing:
    ranked = tuple(
        candidate(req, row, ratio)
        for row, ratio in zip(prefix, ratios(rule, prefix, depth), strict=False)  # first `depth`
    )
    counts: dict[str, int] = {}
    for p in passed:
        counts[p.reason] = counts.get(p.reason, 0) + 1
    return Clearing(
        requirements=req,
        price_rule=rule,
        ranked=ranked,
        passed_over=tuple(passed),
        reason_counts={reason: counts[reason] for reason in PASS_REASONS if reason in counts},
        outranked=qualifying - len(ranked),
    )
