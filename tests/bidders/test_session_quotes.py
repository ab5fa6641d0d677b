"""Quotes to the bidder session: what is taken, with which defaults, and what is rejected."""

from __future__ import annotations

import json
import re

import pytest

from bidders.session import Send, Upsert
from clearing.money import PriceMicros
from clearing.types import Offer
from tests.bidders.session_cases import INVALID_OFFERS
from tests.bidders.session_kit import (
    DELETE,
    greeted,
    minimal,
    offer,
    only_error,
    quote,
    reject_errors,
    send,
    state_of,
    upserted,
)
from tests.examples import EXAMPLE_OFFER

# -- quote -----------------------------------------------------------------------------------


def test_full_offer_is_taken_exactly() -> None:
    session = greeted()
    actions = quote(session, 7, offer())
    expected = EXAMPLE_OFFER
    assert actions == [Upsert((expected,)), Send({"type": "ack", "seq": 7})]


def test_minimal_offer_gets_the_defaults() -> None:
    session = greeted()
    (taken,) = upserted(quote(session, 1, minimal("m", "gpt-4o")))
    assert taken == Offer(
        provider="acme",
        offer_id="m",
        model="gpt-4o",
        input_price=PriceMicros(500_000),
        output_price=PriceMicros(1_500_000),
        cached_input_price=PriceMicros(500_000),
        concurrency=4,
        quality=85,
        context_window=128000,
        max_output_tokens=16384,
        features=frozenset({"tools", "vision", "json_mode", "streaming"}),
        seq=0,
        upstream_model="gpt-4o",
        ttl_ms=15_000,
    )


def test_nulls_mean_the_default() -> None:
    session = greeted()
    body = offer(
        upstream_model=None,
        cached_input_usd_per_mtok=None,
        quantization=None,
        latency=None,
        context_window=None,
        max_output_tokens=None,
        features=None,
        region=None,
        ttl_ms=None,
        capacity={"concurrency": 2, "tokens_per_minute": None},
    )
    (taken,) = upserted(quote(session, 1, body))
    assert taken.upstream_model == taken.model and taken.cached_input_price == taken.input_price
    assert taken.quantization is None and taken.region is None and taken.tokens_per_minute is None
    assert taken.ttl_ms == 15_000 and taken.context_window == 131072


@pytest.mark.parametrize(
    ("price", "micros"),
    [("0.59", 590_000), (0.59, 590_000), (2, 2_000_000), ("0.000001", 1), (" 1.5 ", 1_500_000)],
)
def test_prices_as_strings_or_json_numbers(price: object, micros: int) -> None:
    session = greeted()
    body = offer(input_usd_per_mtok=price, cached_input_usd_per_mtok=DELETE)
    (taken,) = upserted(quote(session, 1, body))
    assert taken.input_price == micros


def test_a_json_number_with_seven_decimals_is_rejected_exactly() -> None:
    session = greeted()
    text = json.dumps({"type": "quote", "seq": 1, "offers": [offer()]}).replace(
        '"0.59"', "0.5900001"
    )
    actions = session.receive(text, 0)
    assert not upserted(actions)
    assert "6 decimal places" in str(reject_errors(actions)[0]["message"])


@pytest.mark.parametrize(("body", "reason"), INVALID_OFFERS)
def test_each_invalid_offer_is_rejected_with_its_reason(
    body: dict[str, object], reason: str
) -> None:
    session = greeted()
    actions = quote(session, 3, body, minimal("ok"))
    assert [o.offer_id for o in upserted(actions)] == ["ok"]
    (err,) = reject_errors(actions)
    assert reason in str(err["message"])
    expected_id = body.get("offer_id")
    if isinstance(expected_id, str) and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", expected_id):
        assert err["offer_id"] == expected_id
    else:
        assert err["offer_id"] is None and str(err["message"]).startswith("offers[0]: ")
    assert actions[-1] == Send({"type": "reject", "seq": 3, "errors": [err]})


@pytest.mark.parametrize(
    "body",
    [
        offer(context_window=4096, max_output_tokens=1024, features=[]),
        offer(context_window=131072, max_output_tokens=8192, features=["tools"]),
        offer(ttl_ms=1000),
        offer(ttl_ms=60_000),
        offer(cached_input_usd_per_mtok="0.59"),
        offer(offer_id="a.b_c:d-E9"),
        offer(offer_id="x" * 128),
        offer(capacity={"concurrency": 100_000}),
    ],
)
def test_narrowing_and_edges_are_taken(body: dict[str, object]) -> None:
    session = greeted()
    assert upserted(quote(session, 1, body))


def test_non_object_offer_is_rejected_by_position() -> None:
    session = greeted()
    actions = quote(session, 1, minimal("a"), "b", None)
    assert reject_errors(actions) == [
        {"offer_id": None, "message": "offers[1]: an offer must be a JSON object"},
        {"offer_id": None, "message": "offers[2]: an offer must be a JSON object"},
    ]


def test_duplicate_offer_id_rejects_the_later_one() -> None:
    session = greeted()
    later = dict(minimal("dup"), input_usd_per_mtok="0.9")
    actions = quote(session, 1, minimal("dup"), later)
    (taken,) = upserted(actions)
    assert taken.input_price == 500_000
    assert reject_errors(actions) == [
        {"offer_id": "dup", "message": "duplicate offer_id in this quote; the first was taken"}
    ]


def test_offers_per_provider_are_limited() -> None:
    session = greeted()  # max 3
    actions = quote(session, 1, minimal("a"), minimal("b"), minimal("c"), minimal("d"))
    assert [o.offer_id for o in upserted(actions)] == ["a", "b", "c"]
    assert [e["offer_id"] for e in reject_errors(actions)] == ["d"]
    assert session.offer_count == 3
    assert upserted(quote(session, 2, minimal("a")))  # re-quoting an offer needs no room
    send(session, {"type": "withdraw", "seq": 3, "offer_ids": ["b"]})
    assert session.offer_count == 2
    assert upserted(quote(session, 4, minimal("d")))[0].offer_id == "d"


def test_empty_quote_is_acked_without_upsert() -> None:
    session = greeted()
    assert quote(session, 1) == [Send({"type": "ack", "seq": 1})]


def test_all_invalid_quote_is_rejected_without_upsert() -> None:
    session = greeted()
    actions = quote(session, 1, offer(model="nope"))
    assert len(actions) == 1 and reject_errors(actions)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "quote", "seq": 1},
        {"type": "quote", "seq": 1, "offers": {"o1": {}}},
        {"type": "quote", "seq": 1, "offers": None},
    ],
)
def test_quote_without_an_offer_list_changes_nothing(message: object) -> None:
    session = greeted()
    assert only_error(send(session, message)) == "invalid_message"
    assert session.last_seq == 0 and state_of(session) == "hello"
    assert upserted(quote(session, 1, minimal()))
