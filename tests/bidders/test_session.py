"""The sans-I/O bidder session: every message type, validation rule, error code and limit."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidders.messages import ERROR_CODES, Fill, fill_message
from bidders.session import (
    TRANSITIONS,
    Action,
    BidderSession,
    Close,
    Refresh,
    Send,
    SessionLimits,
    Upsert,
    Withdraw,
)
from clearing.catalogue import parse_catalogue
from clearing.money import Nanos, PriceMicros
from clearing.types import Offer
from tests.examples import EXAMPLE_OFFER

CATALOGUE = parse_catalogue(
    [
        {
            "id": "llama-3.1-70b-instruct",
            "quality": 80,
            "context_window": 131072,
            "max_output_tokens": 8192,
            "features": ["tools", "json_mode", "streaming"],
        },
        {
            "id": "gpt-4o",
            "quality": 85,
            "context_window": 128000,
            "max_output_tokens": 16384,
            "features": ["tools", "vision", "json_mode", "streaming"],
        },
    ]
)
LIMITS = SessionLimits(
    max_message_bytes=4096,
    max_offers_per_provider=3,
    max_messages_per_second=20,
    default_ttl_ms=15_000,
    max_ttl_ms=60_000,
    heartbeat_ms=5_000,
)
DELETE = object()


def offer(**changes: object) -> dict[str, object]:
    """The interface's example OFFER, with fields changed (DELETE removes one)."""
    body: dict[str, object] = {
        "offer_id": "llama-70b-fast",
        "model": "llama-3.1-70b-instruct",
        "upstream_model": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        "input_usd_per_mtok": "0.59",
        "output_usd_per_mtok": "0.79",
        "cached_input_usd_per_mtok": "0.30",
        "quantization": "fp8",
        "capacity": {"concurrency": 64, "tokens_per_minute": 2000000},
        "latency": {"ttft_ms": 250, "output_tokens_per_s": 180},
        "context_window": 131072,
        "max_output_tokens": 8192,
        "features": ["tools", "json_mode", "streaming"],
        "region": "us",
        "ttl_ms": 15000,
    }
    for key, value in changes.items():
        if value is DELETE:
            del body[key]
        else:
            body[key] = value
    return body


def minimal(offer_id: str = "o1", model: str = "llama-3.1-70b-instruct") -> dict[str, object]:
    return {
        "offer_id": offer_id,
        "model": model,
        "input_usd_per_mtok": "0.5",
        "output_usd_per_mtok": "1.5",
        "capacity": {"concurrency": 4},
    }


def new_session(limits: SessionLimits = LIMITS) -> BidderSession:
    return BidderSession("acme", CATALOGUE, limits, "sess-1", now_ms=0)


def state_of(session: BidderSession) -> str:
    """The state, read through a call so that mypy does not narrow it between steps."""
    return session.state


def send(session: BidderSession, message: object, now_ms: int = 0) -> list[Action]:
    text = message if isinstance(message, str | bytes) else json.dumps(message)
    return session.receive(text, now_ms)


def greeted(limits: SessionLimits = LIMITS) -> BidderSession:
    session = new_session(limits)
    send(session, {"type": "hello", "provider": "acme", "protocol": 1, "agent": "t/1"})
    return session


def only_error(actions: list[Action]) -> str:
    """The code of the single error the actions consist of."""
    assert len(actions) == 1 and isinstance(actions[0], Send), actions
    message = actions[0].message
    assert message["type"] == "error" and isinstance(message["message"], str)
    assert message["code"] in ERROR_CODES
    return str(message["code"])


def quote(session: BidderSession, seq: int, *offers: object) -> list[Action]:
    return send(session, {"type": "quote", "seq": seq, "offers": list(offers)})


def reject_errors(actions: list[Action]) -> list[dict[str, object]]:
    last = actions[-1]
    assert isinstance(last, Send) and last.message["type"] == "reject"
    errors = last.message["errors"]
    assert isinstance(errors, list)
    return errors


def upserted(actions: list[Action]) -> tuple[Offer, ...]:
    found = [a for a in actions if isinstance(a, Upsert)]
    return found[0].offers if found else ()


# -- the state table -------------------------------------------------------------------------


def test_transition_table_is_the_documented_life() -> None:
    assert TRANSITIONS == {
        ("connected", "hello"): "hello",
        ("connected", "close"): "closed",
        ("hello", "quote"): "quoting",
        ("hello", "withdraw"): "quoting",
        ("hello", "heartbeat"): "hello",
        ("hello", "close"): "closed",
        ("quoting", "quote"): "quoting",
        ("quoting", "withdraw"): "quoting",
        ("quoting", "heartbeat"): "quoting",
        ("quoting", "close"): "closed",
    }
    assert not any(state == "closed" for state, _ in TRANSITIONS)


def test_states_follow_the_table() -> None:
    session = new_session()
    assert state_of(session) == "connected"
    send(session, {"type": "hello", "provider": "acme", "protocol": 1})
    assert state_of(session) == "hello"
    send(session, {"type": "heartbeat"})
    assert state_of(session) == "hello"
    quote(session, 1, minimal())
    assert state_of(session) == "quoting"
    session.connection_lost()
    assert state_of(session) == "closed"
    assert quote(session, 2, minimal()) == []
    session.connection_lost()  # idempotent
    assert state_of(session) == "closed"


def test_withdraw_moves_hello_to_quoting() -> None:
    session = greeted()
    send(session, {"type": "withdraw", "seq": 1, "offer_ids": []})
    assert state_of(session) == "quoting"


# -- hello -----------------------------------------------------------------------------------


def test_hello_gets_welcome() -> None:
    session = new_session()
    actions = send(session, {"type": "hello", "provider": "acme", "protocol": 1, "agent": "a/1"})
    assert actions == [Send({"type": "welcome", "session": "sess-1", "heartbeat_ms": 5000})]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "quote", "seq": 1, "offers": []},
        {"type": "withdraw", "seq": 1, "offer_ids": []},
        {"type": "heartbeat"},
    ],
)
def test_anything_before_hello_is_refused_and_the_session_goes_on(message: object) -> None:
    session = new_session()
    assert only_error(send(session, message)) == "hello_required"
    assert state_of(session) == "connected"
    send(session, {"type": "hello", "provider": "acme", "protocol": 1})
    assert state_of(session) == "hello"


def test_second_hello_is_unexpected() -> None:
    session = greeted()
    hello = {"type": "hello", "provider": "acme", "protocol": 1}
    assert only_error(send(session, hello)) == "unexpected_message"
    assert state_of(session) == "hello"


def test_hello_for_another_provider_closes_with_4003() -> None:
    session = new_session()
    actions = send(session, {"type": "hello", "provider": "other", "protocol": 1})
    assert len(actions) == 2
    assert isinstance(actions[0], Send) and actions[0].message["code"] == "wrong_provider"
    assert actions[1] == Close(4003, "wrong provider")
    assert state_of(session) == "closed"
    assert send(session, {"type": "hello", "provider": "acme", "protocol": 1}) == []


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"provider": "acme", "protocol": 2}, "unsupported_protocol"),
        ({"provider": "acme", "protocol": "1"}, "invalid_message"),
        ({"provider": "acme", "protocol": True}, "invalid_message"),
        ({"provider": "acme"}, "invalid_message"),
        ({"protocol": 1}, "invalid_message"),
        ({"provider": 7, "protocol": 1}, "invalid_message"),
        ({"provider": "acme", "protocol": 1, "agent": 5}, "invalid_message"),
    ],
)
def test_bad_hello_is_refused_and_hello_may_be_retried(hello: dict[str, object], code: str) -> None:
    session = new_session()
    assert only_error(send(session, {"type": "hello", **hello})) == code
    assert state_of(session) == "connected"
    send(session, {"type": "hello", "provider": "acme", "protocol": 1, "agent": None})
    assert state_of(session) == "hello"


# -- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '"hello"',
        "",
        '{"type": "quote", "seq": NaN}',
        '{"a": Infinity}',
        "[" * 100_000,
        b"\xff\xfe\x00garbage",
    ],
)
def test_undecodable_frames_get_invalid_message_and_the_session_goes_on(
    frame: str | bytes,
) -> None:
    session = greeted(SessionLimits(max_message_bytes=200_000))
    assert only_error(session.receive(frame, 0)) == "invalid_message"
    assert upserted(quote(session, 1, minimal()))


@pytest.mark.parametrize(
    "message", [{"type": "bid"}, {"no": "type"}, {"type": 3}, {"type": ["quote"]}, {"type": None}]
)
def test_unknown_types_get_unknown_type(message: object) -> None:
    session = greeted()
    assert only_error(send(session, message)) == "unknown_type"
    assert state_of(session) == "hello"


def test_bytes_frames_are_read_as_utf8_json() -> None:
    session = greeted()
    frame = json.dumps({"type": "quote", "seq": 1, "offers": [minimal()]}).encode()
    assert upserted(session.receive(frame, 0))


def test_message_size_is_limited_in_utf8_bytes() -> None:
    session = greeted(SessionLimits(max_message_bytes=1024))
    padded = {"type": "heartbeat", "pad": "x" * 1000}
    assert only_error(send(session, padded)) == "message_too_large"
    assert only_error(session.receive(json.dumps(padded).encode(), 0)) == "message_too_large"
    # 400 three-byte characters: 400 code points but 1200 bytes.
    wide = json.dumps({"type": "heartbeat", "pad": "€" * 400}, ensure_ascii=False)
    assert len(wide) < 1024 < len(wide.encode())
    assert only_error(session.receive(wide, 0)) == "message_too_large"
    assert send(session, {"type": "heartbeat", "pad": "x" * 900}) == []


def test_rate_limit_drops_messages_and_warns_once_per_second() -> None:
    limits = SessionLimits(max_messages_per_second=3)
    session = new_session(limits)
    send(session, {"type": "hello", "provider": "acme", "protocol": 1}, now_ms=1000)
    first = send(session, {"type": "quote", "seq": 1, "offers": [minimal("a")]}, 1200)
    assert upserted(first)  # the 2nd message in the window
    assert send(session, {"type": "heartbeat"}, now_ms=1500) != []  # 3rd
    dropped = send(session, {"type": "quote", "seq": 2, "offers": [minimal("b")]}, 1999)
    assert only_error(dropped) == "rate_limited"
    assert send(session, {"type": "quote", "seq": 2, "offers": [minimal("b")]}, 1999) == []
    assert session.last_seq == 1 and session.offer_count == 1
    again = send(session, {"type": "quote", "seq": 2, "offers": [minimal("b")]}, 2000)
    assert upserted(again)[0].offer_id == "b"


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


INVALID_OFFERS: list[tuple[dict[str, object], str]] = [
    (offer(offer_id=DELETE), "offer_id"),
    (offer(offer_id=""), "offer_id"),
    (offer(offer_id="has space"), "offer_id"),
    (offer(offer_id="a/b"), "offer_id"),
    (offer(offer_id="x" * 129), "offer_id"),
    (offer(offer_id=12), "offer_id"),
    (offer(model="gpt-99"), "not in the catalogue"),
    (offer(model=DELETE), "model"),
    (offer(model=["gpt-4o"]), "model"),
    (offer(input_usd_per_mtok=DELETE), "input_usd_per_mtok is required"),
    (offer(output_usd_per_mtok=DELETE), "output_usd_per_mtok is required"),
    (offer(input_usd_per_mtok="0"), "greater than 0"),
    (offer(output_usd_per_mtok="-1"), "greater than 0"),
    (offer(input_usd_per_mtok="0.1234567"), "6 decimal places"),
    (offer(input_usd_per_mtok="NaN"), "finite"),
    (offer(input_usd_per_mtok="Infinity"), "finite"),
    (offer(input_usd_per_mtok="cheap"), "not a decimal"),
    (offer(input_usd_per_mtok=True), "boolean"),
    (offer(output_usd_per_mtok="1e12"), "implausibly large"),
    (offer(cached_input_usd_per_mtok="0.60"), "must not exceed"),
    (offer(cached_input_usd_per_mtok="0"), "greater than 0"),
    (offer(quantization="q4_k_m"), "quantization"),
    (offer(capacity=DELETE), "capacity"),
    (offer(capacity=64), "capacity"),
    (offer(capacity={}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 0}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 100_001}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 1.5}), "capacity.concurrency"),
    (offer(capacity={"concurrency": True}), "capacity.concurrency"),
    (offer(capacity={"concurrency": "8"}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 8, "tokens_per_minute": 0}), "tokens_per_minute"),
    (offer(capacity={"concurrency": 8, "burst": 2}), "'burst'"),
    (offer(latency="fast"), "latency"),
    (offer(latency={"ttft_ms": 0}), "latency.ttft_ms"),
    (offer(latency={"ttft_ms": 250.5}), "latency.ttft_ms"),
    (offer(latency={"output_tokens_per_s": -3}), "latency.output_tokens_per_s"),
    (offer(latency={"p99_ms": 3}), "'p99_ms'"),
    (offer(context_window=131073), "never widen"),
    (offer(context_window=0), "context_window"),
    (offer(max_output_tokens=8193), "never widen"),
    (offer(max_output_tokens="8192"), "max_output_tokens"),
    (offer(features=["vision"]), "lacks feature"),
    (offer(features=["telepathy"]), "unknown feature"),
    (offer(features="tools"), "features"),
    (offer(features=["tools", 3]), "features"),
    (offer(region=""), "region"),
    (offer(region="x" * 33), "region"),
    (offer(region="us east"), "region"),
    (offer(region=1), "region"),
    (offer(ttl_ms=999), "ttl_ms"),
    (offer(ttl_ms=60_001), "ttl_ms"),
    (offer(ttl_ms=15000.0), "ttl_ms"),
    (offer(upstream_model=""), "upstream_model"),
    (offer(upstream_model="bad\nname"), "upstream_model"),
    (offer(upstream_model="x" * 257), "upstream_model"),
    (offer(color="blue", price=1), "unknown field(s): 'color', 'price'"),
]


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


# -- seq -------------------------------------------------------------------------------------


def test_replayed_and_out_of_order_seq_change_nothing() -> None:
    session = greeted()
    assert upserted(quote(session, 5, minimal("a")))
    assert only_error(quote(session, 5, minimal("b"))) == "bad_seq"
    assert only_error(quote(session, 4, minimal("b"))) == "bad_seq"
    withdraw = {"type": "withdraw", "seq": 5, "offer_ids": ["a"]}
    assert only_error(send(session, withdraw)) == "bad_seq"
    assert session.last_seq == 5 and session.offer_count == 1
    assert upserted(quote(session, 9, minimal("b")))  # gaps are fine
    assert session.last_seq == 9


@pytest.mark.parametrize("seq", [None, 0, -1, 1.0, "1", True, 2**53])
def test_seq_must_be_a_positive_safe_integer(seq: object) -> None:
    session = greeted()
    message: dict[str, object] = {"type": "quote", "offers": [minimal()]}
    if seq is not None:
        message["seq"] = seq
    assert only_error(send(session, message)) == "invalid_message"
    assert session.last_seq == 0


# -- withdraw --------------------------------------------------------------------------------


def test_withdraw_removes_and_acks() -> None:
    session = greeted()
    quote(session, 1, minimal("a"), minimal("b"))
    actions = send(session, {"type": "withdraw", "seq": 2, "offer_ids": ["a", "a", "zz"]})
    assert actions == [Withdraw(("a", "zz")), Send({"type": "ack", "seq": 2})]
    assert session.offer_count == 1


def test_withdraw_with_bad_ids_rejects_them_and_withdraws_the_rest() -> None:
    session = greeted()
    actions = send(session, {"type": "withdraw", "seq": 1, "offer_ids": ["a", 5, "no/slash"]})
    assert actions == [
        Withdraw(("a",)),
        Send(
            {
                "type": "reject",
                "seq": 1,
                "errors": [
                    {"offer_id": None, "message": "offer_ids[1] is not a valid offer_id"},
                    {"offer_id": None, "message": "offer_ids[2] is not a valid offer_id"},
                ],
            }
        ),
    ]


def test_withdraw_without_a_list_is_invalid() -> None:
    session = greeted()
    assert only_error(send(session, {"type": "withdraw", "seq": 1, "offer_ids": "a"})) == (
        "invalid_message"
    )
    assert session.last_seq == 0


# -- heartbeat, refresh and models -----------------------------------------------------------


def test_heartbeat_refreshes_the_sessions_models() -> None:
    session = greeted()
    assert send(session, {"type": "heartbeat"}) == []
    quote(session, 1, minimal("a"), minimal("b", "gpt-4o"))
    both = frozenset({"llama-3.1-70b-instruct", "gpt-4o"})
    assert session.models == both
    assert send(session, {"type": "heartbeat"}) == [Refresh(both)]


def test_a_quote_also_refreshes_the_sessions_earlier_offers() -> None:
    session = greeted()
    first = quote(session, 1, minimal("a", "gpt-4o"))
    assert not any(isinstance(a, Refresh) for a in first)
    actions = quote(session, 2, minimal("b"))
    assert actions[0] == Refresh(frozenset({"gpt-4o"}))
    assert isinstance(actions[1], Upsert) and actions[2] == Send({"type": "ack", "seq": 2})


def test_a_quote_refreshes_only_models_with_offers_it_does_not_requote() -> None:
    session = greeted()
    quote(session, 1, minimal("a", "gpt-4o"), minimal("b"), minimal("c"))
    whole = quote(session, 2, minimal("a", "gpt-4o"), minimal("b"), minimal("c"))
    assert not any(isinstance(a, Refresh) for a in whole)  # the upsert sets every ttl
    part = quote(session, 3, minimal("a", "gpt-4o"), minimal("b"))
    assert part[0] == Refresh(frozenset({"llama-3.1-70b-instruct"}))  # c lives on too
    moved = quote(session, 4, minimal("c", "gpt-4o"), minimal("b"))
    assert moved[0] == Refresh(frozenset({"gpt-4o"}))  # a; c left llama for gpt-4o


def test_models_keep_every_model_quoted_for_cancel() -> None:
    session = greeted()
    quote(session, 1, minimal("a", "gpt-4o"))
    send(session, {"type": "withdraw", "seq": 2, "offer_ids": ["a"]})
    assert session.models == frozenset({"gpt-4o"}) and session.offer_count == 0


# -- builders --------------------------------------------------------------------------------


def test_fill_message_matches_the_interface() -> None:
    fill = Fill("o1", "clr_1", "gpt-4o", 812, 240, Nanos(670_000), 1796000000000)
    assert fill_message(fill) == {
        "type": "fill",
        "offer_id": "o1",
        "clearing_id": "clr_1",
        "model": "gpt-4o",
        "input_tokens": 812,
        "output_tokens": 240,
        "cost_usd": "0.000670",
        "ts": 1796000000000,
    }


def test_send_text_is_compact_json() -> None:
    assert Send({"type": "ack", "seq": 1}).text == '{"type":"ack","seq":1}'


# -- properties: garbage never raises, invalid offers never reach the book -------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from([*sorted(offer()), "junk"])
# Mostly near-valid offers (the example with one field replaced by any JSON value), so that the
# property reaches the book path often, plus some arbitrary objects.
NEAR_VALID = st.builds(
    lambda offer_id, model, extra: {**offer(offer_id=offer_id, model=model), **extra},
    st.sampled_from(["a", "b", "c", "bad id"]),
    st.sampled_from(["gpt-4o", "llama-3.1-70b-instruct"]),
    st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=1),
)
OFFERISH = NEAR_VALID | NEAR_VALID | st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=8)
QUOTES = st.fixed_dictionaries(
    {
        "type": st.just("quote"),
        "seq": st.integers(-1, 12),
        "offers": st.lists(OFFERISH, max_size=4),
    }
)
MESSAGES = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["hello", "quote", "withdraw", "heartbeat", "junk"]),
        "seq": JSON_VALUES | st.integers(0, 10),
        "offers": st.lists(OFFERISH, max_size=4) | JSON_VALUES,
        "offer_ids": st.lists(JSON_VALUES, max_size=3) | JSON_VALUES,
        "provider": st.sampled_from(["acme", "other"]) | JSON_VALUES,
        "protocol": st.sampled_from([1, 2]) | JSON_VALUES,
    }
)
FRAMES = (
    QUOTES.map(json.dumps)
    | QUOTES.map(json.dumps)
    | MESSAGES.map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | st.text(max_size=200)
    | st.binary(max_size=200)
)


def assert_sound(offer_: Offer) -> None:
    """A reference check, written apart from the validator, of what the book may receive."""
    info = CATALOGUE[offer_.model]
    assert offer_.provider == "acme" and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", offer_.offer_id)
    assert 0 < offer_.cached_input_price <= offer_.input_price and offer_.output_price > 0
    assert 1 <= offer_.concurrency <= 100_000 and offer_.quality == info.quality
    assert 0 < offer_.context_window <= info.context_window
    assert 0 < offer_.max_output_tokens <= info.max_output_tokens
    assert offer_.features <= info.features
    assert 1_000 <= offer_.ttl_ms <= LIMITS.max_ttl_ms


def assert_well_formed(actions: list[Action]) -> None:
    for action in actions:
        if isinstance(action, Send):
            assert action.message["type"] in {"welcome", "ack", "reject", "error"}
            json.loads(action.text)
            if action.message["type"] == "error":
                assert action.message["code"] in ERROR_CODES
        elif isinstance(action, Upsert):
            for taken in action.offers:
                assert_sound(taken)
        else:
            assert isinstance(action, Withdraw | Refresh | Close)


@settings(max_examples=150, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=5), st.booleans())
def test_garbage_never_raises_and_only_sound_offers_reach_the_book(
    frames: list[str | bytes], say_hello_first: bool
) -> None:
    session = greeted() if say_hello_first else new_session()
    for frame in frames:
        assert_well_formed(session.receive(frame, 0))


MUTATIONS = [body for body, reason in INVALID_OFFERS if reason != "offer_id"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
    st.lists(st.integers(0, 5), min_size=3, max_size=3),
)
def test_an_invalid_offer_never_reaches_the_book(
    bad: list[dict[str, object]], positions: list[int]
) -> None:
    session = greeted(SessionLimits(max_offers_per_provider=100, max_ttl_ms=60_000))
    offers: list[object] = [minimal(f"good{i}") for i in range(3)]
    for n, (body, where) in enumerate(zip(bad, positions, strict=False)):
        offers.insert(where, dict(body, offer_id=f"bad{n}"))
    actions = quote(session, 1, *offers)
    assert {o.offer_id for o in upserted(actions)} == {"good0", "good1", "good2"}
    assert [e["offer_id"] for e in reject_errors(actions)] == [
        o["offer_id"]
        for o in offers
        if isinstance(o, dict) and str(o["offer_id"]).startswith("bad")
    ]
    assert_well_formed(actions)


# -- re-quotes: an offer whose only change is its prices has only its prices checked -----------


def taken_and_errors(actions: list[Action]) -> tuple[tuple[Offer, ...], object]:
    last = actions[-1]
    assert isinstance(last, Send)
    return upserted(actions), last.message.get("errors")


@pytest.mark.parametrize(("body", "reason"), INVALID_OFFERS)
def test_a_requote_is_checked_like_a_first_quote(body: dict[str, object], reason: str) -> None:
    # The session knows the valid example offer; each mutation of it, under the same offer_id,
    # must be rejected exactly as a session that never saw the offer rejects it.
    known = greeted()
    assert upserted(quote(known, 1, offer()))
    fresh = greeted()
    requoted, first = quote(known, 2, body), quote(fresh, 2, body)
    assert taken_and_errors(requoted) == taken_and_errors(first)
    assert reason in str(reject_errors(requoted)[0]["message"])


@pytest.mark.parametrize(
    "changes",
    [{"capacity": {"concurrency": True}}, {"capacity": {"concurrency": 1.0}}, {"ttl_ms": 15e3}],
)
def test_a_requote_with_a_bool_or_float_equal_to_the_known_int_is_rejected(
    changes: dict[str, object],
) -> None:
    # `true == 1` and `1.0 == 1` in Python: the re-quote path must not take them for the ints.
    session = greeted()
    known = dict(minimal("one"), capacity={"concurrency": 1}, ttl_ms=15_000)
    assert upserted(quote(session, 1, known))
    actions = quote(session, 2, dict(known, **changes))  # json.dumps: true, 1.0, 15000.0
    assert not upserted(actions)
    assert len(reject_errors(actions)) == 1


def test_a_price_only_requote_keeps_every_other_field() -> None:
    session = greeted()
    (first,) = upserted(quote(session, 1, offer()))
    cheaper = offer(input_usd_per_mtok="0.4", output_usd_per_mtok="0.5")
    (again,) = upserted(quote(session, 2, cheaper))
    assert again == replace(
        first, input_price=PriceMicros(400_000), output_price=PriceMicros(500_000)
    )
    (fresh,) = upserted(quote(greeted(), 1, cheaper))
    assert again == fresh
    # Without its cached price, the cached price is the input price again.
    (plain,) = upserted(quote(session, 3, offer(cached_input_usd_per_mtok=DELETE)))
    assert plain.cached_input_price == plain.input_price == 590_000


PRICES = st.sampled_from(["0.5", "0.25", "2", "0", "x", "0.1234567", None, 3, 0.75])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(OFFERISH, PRICES, PRICES, PRICES | st.just(DELETE)), min_size=1, max_size=4
        ),
        min_size=1,
        max_size=5,
    )
)
def test_a_long_session_takes_and_rejects_what_a_fresh_one_would(
    quotes: list[list[tuple[dict[str, object], object, object, object]]],
) -> None:
    limits = SessionLimits(max_offers_per_provider=1_000, max_ttl_ms=60_000)
    long_lived = greeted(limits)
    for seq, entries in enumerate(quotes, start=1):
        offers: list[object] = []
        for body, pin, pout, pcached in entries:
            priced = dict(body, input_usd_per_mtok=pin, output_usd_per_mtok=pout)
            if pcached is DELETE:
                priced.pop("cached_input_usd_per_mtok", None)
            else:
                priced["cached_input_usd_per_mtok"] = pcached
            offers.append(priced)
        assert taken_and_errors(quote(long_lived, seq, *offers)) == taken_and_errors(
            quote(greeted(limits), seq, *offers)
        )
