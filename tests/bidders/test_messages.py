"""The bidder protocol's message builders and the bidder-side fill parser."""

from __future__ import annotations

import pytest

from bidders.messages import (
    Fill,
    OfferError,
    ack_message,
    error_message,
    fill_message,
    heartbeat_message,
    hello_message,
    parse_fill,
    quote_message,
    reject_message,
    welcome_message,
    withdraw_message,
)
from clearing.money import Nanos

FILL = Fill("o1", "clr_1", "gpt-4o", 812, 240, Nanos(670_000), 1796000000000)


def test_builders_match_the_interface() -> None:
    assert hello_message("acme", "a/1") == {
        "type": "hello",
        "provider": "acme",
        "protocol": 1,
        "agent": "a/1",
    }
    assert quote_message(7, [{"offer_id": "x"}]) == {
        "type": "quote",
        "seq": 7,
        "offers": [{"offer_id": "x"}],
    }
    assert withdraw_message(8, ["x"]) == {"type": "withdraw", "seq": 8, "offer_ids": ["x"]}
    assert heartbeat_message() == {"type": "heartbeat"}
    assert welcome_message("s", 5000) == {"type": "welcome", "session": "s", "heartbeat_ms": 5000}
    assert ack_message(7) == {"type": "ack", "seq": 7}
    assert reject_message(7, [OfferError("x", "why")]) == {
        "type": "reject",
        "seq": 7,
        "errors": [{"offer_id": "x", "message": "why"}],
    }
    assert error_message("bad_seq", "m") == {"type": "error", "code": "bad_seq", "message": "m"}


def test_a_fill_round_trips() -> None:
    assert parse_fill(fill_message(FILL)) == FILL


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("offer_id", 5, "offer_id"),
        ("model", None, "model"),
        ("input_tokens", -1, "input_tokens"),
        ("output_tokens", True, "output_tokens"),
        ("ts", "now", "ts"),
        ("cost_usd", "0.0000000001", "cost_usd"),
        ("cost_usd", None, "cost_usd"),
    ],
)
def test_a_malformed_fill_is_refused(field: str, value: object, fragment: str) -> None:
    message = dict(fill_message(FILL), **{field: value})
    with pytest.raises(ValueError, match=fragment):
        parse_fill(message)
