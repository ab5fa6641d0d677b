"""The clearing engine against a dumb reference: filter with a plain predicate, sort, compare."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.engine import clear, explain
from clearing.index import BookIndex
from clearing.money import Nanos, PriceMicros, picos_to_nanos
from clearing.settle import charge
from clearing.types import Clearing, Offer, OfferLive, PriceRule, Requirements, Usage
from tests.clearing.strategies import Book, books, requirements

rules = st.sampled_from(("pay_as_ask", "second_price"))
depths = st.integers(1, 6)


def ref_reason(o: Offer, live: Mapping[str, OfferLive], req: Requirements) -> str | None:
    lv = live.get(o.ref, OfferLive())
    out = o.max_output_tokens if req.max_tokens is None else req.max_tokens
    ttft = o.ttft_ms if lv.observed_ttft_ms is None else lv.observed_ttft_ms
    speed = o.output_tokens_per_s
    if lv.observed_output_tokens_per_s is not None:
        speed = lv.observed_output_tokens_per_s
    tpm = o.tokens_per_minute
    checks = [
        ("provider", req.providers_only is None or o.provider in req.providers_only),
        ("provider", o.provider not in req.providers_ignore),
        ("region", req.region is None or o.region == req.region),
        ("quantization", req.quantizations is None or o.quantization in req.quantizations),
        ("quality", req.min_quality is None or o.quality >= req.min_quality),
        ("missing_feature", req.features <= o.features),
        ("context_too_small", req.input_tokens + out <= o.context_window),
        ("context_too_small", out <= o.max_output_tokens),
        ("too_slow", req.max_ttft_ms is None or (ttft is not None and ttft <= req.max_ttft_ms)),
        (
            "too_slow",
            req.min_output_tokens_per_s is None or (speed or 0) >= req.min_output_tokens_per_s,
        ),
        ("too_expensive", req.max_cost is None or picos_to_nanos(ref_cost(o, req)) <= req.max_cost),
        ("unhealthy", not lv.cooling_down),
        ("no_capacity", lv.in_flight < o.concurrency),
        ("no_capacity", tpm is None or lv.tokens_this_minute + req.input_tokens + out <= tpm),
    ]
    return next((reason for reason, ok in checks if not ok), None)


def ref_cost(o: Offer, req: Requirements) -> int:
    out = o.max_output_tokens if req.max_tokens is None else req.max_tokens
    return req.input_tokens * o.input_price + out * o.output_price


def reference(book: Book, req: Requirements) -> tuple[list[Offer], dict[str, str]]:
    """The qualifying offers cheapest first, and the reason for each of the others."""
    considered = [o for o in book.offers.values() if req.model in ("auto", o.model)]
    reasons = {o.ref: ref_reason(o, book.live, req) for o in considered}
    ranked = sorted(
        (o for o in considered if reasons[o.ref] is None),
        key=lambda o: (ref_cost(o, req), o.seq, o.ref),
    )
    return ranked, {ref: reason for ref, reason in reasons.items() if reason is not None}


def ref_ratio(ranked: list[Offer], at: int, req: Requirements) -> tuple[int, int]:
    """Second price by definition: the next offer from another provider, over the own cost."""
    later = [o for o in ranked[at + 1 :] if o.provider != ranked[at].provider]
    own = ref_cost(ranked[at], req)
    return (ref_cost(later[0], req), own) if later and own else (1, 1)


def refs(result: Clearing) -> list[str]:
    return [c.offer.ref for c in result.ranked]


@settings(max_examples=150, deadline=None)
@given(books(), requirements, rules, depths)
def test_clear_ranks_like_the_reference(
    book: Book, req: Requirements, rule: PriceRule, depth: int
) -> None:
    ranked, reasons = reference(book, req)
    result = clear(book.index, book.live, req, price_rule=rule, depth=depth)
    assert refs(result) == [o.ref for o in ranked[:depth]]
    assert [c.rank_cost_picos for c in result.ranked] == [ref_cost(o, req) for o in ranked[:depth]]
    for passed in result.passed_over:  # every offer passed over was examined and does not qualify
        assert reasons[passed.ref] == passed.reason
    assert len({p.ref for p in result.passed_over}) == len(result.passed_over)
    assert result.outranked <= len(ranked) - len(result.ranked)
    assert sum(result.reason_counts.values()) == len(result.passed_over)
    if not ranked:  # no qualifier: every considered offer was read, for the 503's details
        assert result.reason_counts == dict(Counter(reasons.values()))
    for at, cand in enumerate(result.ranked):
        num, den = ref_ratio(ranked, at, req) if rule == "second_price" else (1, 1)
        assert cand.ratio_num * den == num * cand.ratio_den


@settings(max_examples=100, deadline=None)
@given(books(), requirements, rules, st.none() | depths)
def test_explain_gives_every_offer_a_rank_or_the_reference_reason(
    book: Book, req: Requirements, rule: PriceRule, depth: int | None
) -> None:
    ranked, reasons = reference(book, req)
    result = explain(book.index, book.live, req, price_rule=rule, depth=depth)
    assert refs(result) == [o.ref for o in ranked[:depth]]
    assert {p.ref: p.reason for p in result.passed_over} == reasons
    assert len(result.passed_over) == len(reasons)
    assert result.outranked == len(ranked) - len(result.ranked)
    assert result.reason_counts == dict(Counter(reasons.values()))


@settings(max_examples=100, deadline=None)
@given(books(), requirements, rules, depths, st.data())
def test_money_properties(
    book: Book, req: Requirements, rule: PriceRule, depth: int, data: st.DataObject
) -> None:
    result = clear(book.index, book.live, req, price_rule=rule, depth=depth)
    qualifying, _ = reference(book, req)
    if qualifying:  # the winner is the cheapest qualifying offer
        assert result.winner is not None
        assert result.winner.rank_cost_picos == min(ref_cost(o, req) for o in qualifying)
    for cand in result.ranked:
        ask = picos_to_nanos(cand.rank_cost_picos)
        assert cand.ratio_num >= cand.ratio_den >= 1
        assert cand.expected <= cand.worst_case
        if req.max_cost is not None:
            assert cand.worst_case <= req.max_cost
            assert ask <= req.max_cost  # qualified, so its own ask fits
        assert cand.worst_case >= min(ask, req.max_cost if req.max_cost is not None else ask)
        if rule == "pay_as_ask":
            assert cand.worst_case == ask
        usage = Usage(
            input_tokens=data.draw(st.integers(0, 10_000)),
            output_tokens=data.draw(st.integers(0, 6_000)),
            cached_input_tokens=data.draw(st.integers(0, 10_000)),
        )
        assert 0 <= charge(cand, usage) <= cand.worst_case


BASE = Offer(
    provider="a",
    offer_id="base",
    model="m",
    input_price=PriceMicros(1),
    output_price=PriceMicros(1),
    cached_input_price=PriceMicros(1),
    concurrency=4,
    quality=80,
    context_window=100_000,
    max_output_tokens=4_000,
    features=frozenset({"tools"}),
    seq=0,
)


def offer(
    ref: str,
    input_price: int,
    output_price: int,
    seq: int = 0,
    *,
    quality: int = 80,
    region: str | None = None,
    model: str = "m",
) -> Offer:
    provider, offer_id = ref.split("/")
    return replace(
        BASE,
        provider=provider,
        offer_id=offer_id,
        input_price=PriceMicros(input_price),
        output_price=PriceMicros(output_price),
        cached_input_price=PriceMicros(input_price),
        seq=seq,
        quality=quality,
        region=region,
        model=model,
    )


def index_of(*offers: Offer) -> BookIndex:
    index = BookIndex()
    for o in offers:
        index.upsert(o)
    return index


def test_ties_go_to_the_earlier_offer_then_the_ref() -> None:
    index = index_of(
        offer("b/x", 10, 10, seq=5), offer("a/y", 10, 10, seq=5), offer("c/z", 10, 10, seq=1)
    )
    result = clear(index, {}, Requirements(model="m", input_tokens=10, max_tokens=10))
    assert refs(result) == ["c/z", "a/y", "b/x"]


def test_second_price_charges_the_next_other_provider() -> None:
    index = index_of(
        offer("a/1", 100, 100),
        offer("a/2", 150, 150),
        offer("b/1", 200, 200),
        offer("c/1", 400, 400),
    )
    req = Requirements(model="m", input_tokens=1_000, max_tokens=1_000)
    result = clear(index, {}, req, price_rule="second_price", depth=2)
    winner, second = result.ranked
    assert (winner.ratio_num, winner.ratio_den) == (2, 1)  # a/2 is the same provider: b/1 sets it
    assert (second.ratio_num, second.ratio_den) == (4, 3)
    assert winner.worst_case == picos_to_nanos(400_000)
    # Only qualifying offers set prices: under a cap of 350 nano-USD, b/1 (400) is too expensive.
    capped = Requirements(model="m", input_tokens=1_000, max_tokens=1_000, max_cost=Nanos(350))
    winner, second = clear(index, {}, capped, price_rule="second_price").ranked
    assert winner.ratio_num == winner.ratio_den == second.ratio_num == second.ratio_den == 1


def test_no_qualifier_counts_every_offer_even_in_skipped_models() -> None:
    index = index_of(
        offer("a/1", 10, 10, quality=30, region="us"),
        offer("b/1", 10, 10, quality=30, region="us", model="other"),
        offer("c/1", 10, 10, quality=95, region="eu"),
    )
    req = Requirements(model="auto", input_tokens=10, min_quality=90, region="us")
    result = clear(index, {}, req)
    assert result.winner is None
    assert result.reason_counts == {"quality": 2, "region": 1}
    assert {p.ref for p in result.passed_over} == {"a/1", "b/1", "c/1"}


def test_auto_skips_models_below_min_quality_without_reading_them() -> None:
    index = index_of(offer("a/1", 1, 1, quality=30), offer("b/1", 99, 99, quality=90, model="big"))
    result = clear(index, {}, Requirements(model="auto", input_tokens=10, min_quality=90))
    assert refs(result) == ["b/1"]
    assert result.passed_over == ()


def test_clear_reads_a_small_prefix_of_a_large_book() -> None:
    # Correlated prices, as in real books: the walk stops long before the end.
    index = index_of(
        *(offer(f"p{n % 7}/o{n}", 1_000 + n, 4_000 + 3 * n, seq=n) for n in range(3_000))
    )
    busy = {f"p{n % 7}/o{n}": OfferLive(in_flight=4) for n in range(0, 3_000, 3)}
    for req in (
        Requirements(model="m", input_tokens=2_000, max_tokens=500),
        Requirements(model="m", input_tokens=2_000),
        Requirements(model="auto", input_tokens=0, max_tokens=100),
    ):
        for rule in ("pay_as_ask", "second_price"):
            result = clear(index, busy, req, price_rule=rule, depth=5)
            assert len(result.ranked) == 5
            assert len(result.passed_over) + len(result.ranked) + result.outranked < 40


def test_zero_token_requests_fall_back_to_a_full_read() -> None:
    index = index_of(
        offer("a/1", 10, 10, seq=2), offer("b/1", 5, 5, seq=1), offer("c/1", 1, 1, seq=3)
    )
    result = clear(index, {}, Requirements(model="m", input_tokens=0, max_tokens=0), depth=2)
    assert refs(result) == ["b/1", "a/1"]  # every cost is 0: time priority decides
    assert result.outranked == 1


def test_depth_must_be_positive() -> None:
    index = index_of(offer("a/1", 1, 1))
    req = Requirements(model="m", input_tokens=1)
    with pytest.raises(ValueError):
        clear(index, {}, req, depth=0)
    with pytest.raises(ValueError):
        explain(index, {}, req, depth=0)
    assert clear(index, {}, Requirements(model="nope", input_tokens=1)).ranked == ()
