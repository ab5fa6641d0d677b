"""The bidder session's framing, rate limit and seq rules, and the messages it builds."""

from __future__ import annotations

import json

import pytest

from bidders.messages import Fill, fill_message
from bidders.session import Send, SessionLimits
from clearing.money import Nanos
from tests.bidders.session_kit import (
    greeted,
    minimal,
    new_session,
    only_error,
    quote,
    send,
    state_of,
    upserted,
)

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
