"""Read-only client views: quotes, the model list with best prices, and the key's account."""

from __future__ import annotations

from auction.accounts import AccountSnapshot
from auction.api_keys import KeyRecord
from auction.broker import Broker, wall_ms
from auction.orders import parse_request
from auction.records import candidate_json, passed_json, requirements_json
from clearing.catalogue import Catalogue
from clearing.engine import explain
from clearing.index import BookIndex
from clearing.money import format_price, format_usd


async def quote(broker: Broker, key: KeyRecord, body: bytes) -> dict[str, object]:
    """Clear without reserving or forwarding, and say why each offer did or did not qualify.

    Raises:
        RateLimited, InvalidRequest.
    """
    p = broker.parts
    parsed = parse_request(body, p.catalogue, p.settings)
    await p.house.count(key.key_id, p.settings.rate_limit_per_minute)
    req = parsed.requirements
    live = p.health.view(p.replica.live, wall_ms())
    index = p.replica.index
    full = explain(index, live, req, price_rule=p.settings.price_rule)
    winner = full.winner
    offers: list[dict[str, object]] = [
        {**candidate_json(c), "qualifies": True, "rank": n, "reason": None}
        for n, c in enumerate(full.ranked, start=1)
    ]
    for passed in full.passed_over:
        row = {**passed_json(passed), "qualifies": False}
        offer = index.get(passed.ref)
        if offer is not None:
            row["ask_input_usd_per_mtok"] = format_price(offer.input_price)
            row["ask_output_usd_per_mtok"] = format_price(offer.output_price)
        offers.append(row)
    return {
        "object": "auction.quote",
        "model": req.model,
        "price_rule": full.price_rule,
        "constraints": requirements_json(req),
        "input_tokens": req.input_tokens,
        "winner": None if winner is None else candidate_json(winner),
        "estimated_cost_usd": None if winner is None else format_usd(winner.expected),
        "worst_case_cost_usd": None if winner is None else format_usd(winner.worst_case),
        "offers": offers,
        "passed_over_counts": dict(full.reason_counts),
    }


def models(index: BookIndex, catalogue: Catalogue) -> dict[str, object]:
    """The OpenAI model list for models with live offers, each with its best current prices.

    The best input and best output price may come from different offers.
    """
    data: list[dict[str, object]] = []
    for model in index.models():
        books = index.books(model)
        if not books or not len(books[0]):
            continue
        book = books[0]
        info = catalogue.get(model)
        providers = {entry[3].provider for entry in book.by_input}
        data.append(
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": "auction",
                "auction": {
                    "best_input_usd_per_mtok": format_price(book.by_input[0][0]),
                    "best_output_usd_per_mtok": format_price(book.by_output[0][0]),
                    "offers": len(book),
                    "providers": len(providers),
                    "quality": None if info is None else info.quality,
                    "context_window": None if info is None else info.context_window,
                    "max_output_tokens": None if info is None else info.max_output_tokens,
                    "features": [] if info is None else sorted(info.features),
                },
            }
        )
    return {"object": "list", "data": data}


def account(snapshot: AccountSnapshot) -> dict[str, object]:
    """`GET /v1/account`: the key's name, budget, period, spent, held and remaining."""
    key = snapshot.key
    return {
        "object": "auction.account",
        "name": key.name,
        "budget_usd": format_usd(key.budget),
        "period": key.period,
        "spent_usd": format_usd(snapshot.spent),
        "held_usd": format_usd(snapshot.held),
        "remaining_usd": format_usd(snapshot.remaining),
        "period_start_ms": snapshot.period_start_ms,
        "resets_ms": snapshot.resets_ms,
    }
