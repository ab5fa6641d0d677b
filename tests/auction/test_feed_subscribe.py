"""The feed session's subscriptions, snapshots, updates and bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from auction.book_stream import BookChange
from auction.feed_wire import Trade, WireTrade
from clearing.money import PriceMicros, format_price
from tests.auction.feed_kit import MODELS, View, change, drain, offer, session, subscribe, trade


# -- subscriptions and snapshots ------------------------------------------------------------------
def test_book_subscribe_is_acknowledged_then_a_snapshot_per_model() -> None:
    view = View()
    cheap, dear = offer("cheap", price=400_000), offer("dear", price=900_000, output_price=1)
    for o in (dear, cheap):
        view.apply(change("new", o, in_flight=2))
    s = session(view)
    s.receive(subscribe(["book"], ["gpt-4o", "mistral-small"]))
    ack, snap, empty = drain(s)
    assert ack == {"type": "subscribed", "seq": 1, "channels": ["book"],
                   "models": ["gpt-4o", "mistral-small"]}  # fmt: skip
    assert snap["type"] == "snapshot" and snap["seq"] == 2 and snap["model"] == "gpt-4o"
    assert snap["reason"] == "subscribe"
    assert [o["offer_id"] for o in snap["offers"]] == ["cheap", "dear"]
    assert snap["offers"][0]["input_usd_per_mtok"] == "0.4"
    assert snap["offers"][0]["in_flight"] == 2 and snap["offers"][0]["tokens_this_minute"] == 0
    assert snap["best"] == {"input_usd_per_mtok": "0.4", "output_usd_per_mtok": "0.000001"}
    assert empty == {"type": "snapshot", "seq": 3, "model": "mistral-small",
                     "reason": "subscribe", "offers": [], "best": None}  # fmt: skip


def test_star_means_every_catalogue_model_and_resubscribe_is_a_fresh_snapshot() -> None:
    s = session()
    s.receive(subscribe(["book", "trades"]))
    first = drain(s)
    assert first[0]["models"] == ["*"] and first[0]["channels"] == ["book", "trades"]
    assert sorted(m["model"] for m in first[1:]) == sorted(MODELS)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    again = drain(s)
    assert [m["type"] for m in again] == ["subscribed", "snapshot"]
    assert again[1]["model"] == "gpt-4o" and again[1]["seq"] == len(first) + 2


def test_unsubscribe_stops_updates_and_drops_what_was_waiting() -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book", "trades"], ["gpt-4o"]))
    drain(s)
    s.on_change(view.apply(change("new", offer())))
    s.receive(json.dumps({"type": "unsubscribe", "channels": ["book", "trades"]}))
    s.on_change(view.apply(change("changed", offer(price=1))))
    s.on_trade(WireTrade.of(trade()))
    assert [m["type"] for m in drain(s)] == ["unsubscribed"]


# -- updates --------------------------------------------------------------------------------------
def test_an_update_for_each_kind_of_change() -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    drain(s)
    o = offer()
    expected: list[tuple[BookChange, dict[str, object]]] = [
        (change("new", o, in_flight=0), {"offer": True, "in_flight": 0}),
        (change("changed", replace(o, input_price=PriceMicros(1))), {"offer": True}),
        (
            change("capacity", o, in_flight=3, tokens=900),
            {"in_flight": 3, "tokens_this_minute": 900},
        ),
        (change("withdrawn", o), {}),
        (change("new", o), {"offer": True, "in_flight": 0}),
        (change("expired", o), {}),
        (change("new", o), {"offer": True, "in_flight": 0}),
        (change("cancelled", o), {}),
    ]
    for c, fields in expected:
        s.on_change(view.apply(c))
        (update,) = drain(s)
        assert update["type"] == "update" and update["kind"] == c.kind
        assert update["model"] == "gpt-4o" and update["ref"] == "acme/o1"
        assert update["ts"] == c.ts
        extra = {
            k: v
            for k, v in update.items()
            if k not in ("type", "seq", "kind", "model", "ref", "ts")
        }
        if fields.pop("offer", False):
            assert c.offer is not None
            assert extra.pop("offer")["input_usd_per_mtok"] == format_price(c.offer.input_price)
        assert extra == fields


def test_changes_to_other_models_are_not_sent() -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book", "trades"], ["gpt-4o"]))
    drain(s)
    s.on_change(view.apply(change("new", offer(model="mistral-small"))))
    s.on_trade(WireTrade.of(trade("mistral-small")))
    assert drain(s) == []
    s.on_trade(WireTrade.of(trade("gpt-4o", ts=7)))
    (message,) = drain(s)
    assert Trade.from_json(message) == trade("gpt-4o", ts=7)
    assert message["cost_usd"] == "0.000670" and message["input_usd_per_mtok"] == "0.59"


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        (b'{"type":"subscribe"}', "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"type": 3}', "invalid_message"),
        ('{"type": "buy"}', "unknown_type"),
        ('{"type": "subscribe"}', "invalid_channels"),
        ('{"type": "subscribe", "channels": ["book", "quotes"]}', "invalid_channels"),
        ('{"type": "subscribe", "channels": [["book"]]}', "invalid_channels"),
        ('{"type": "subscribe", "channels": ["book"], "models": []}', "invalid_models"),
        ('{"type": "subscribe", "channels": ["book"], "models": "gpt-4o"}', "invalid_models"),
        ('{"type": "subscribe", "channels": ["book"], "models": ["gpt-5"]}', "unknown_model"),
        (
            '{"type": "subscribe", "channels": ["book"], "pad": "' + "x" * 20_000 + '"}',
            "message_too_large",
        ),
    ],
)
def test_bad_messages_get_an_error_and_the_session_goes_on(frame: str | bytes, code: str) -> None:
    s = session()
    s.receive(frame)
    (error,) = drain(s)
    assert error["type"] == "error" and error["code"] == code and error["seq"] == 1
    assert isinstance(error["message"], str) and error["message"]
    s.receive(subscribe(["trades"]))
    assert drain(s)[0] == {"type": "subscribed", "seq": 2, "channels": ["trades"], "models": ["*"]}


def test_trades_missed_become_a_resync_notice_for_trade_subscribers_only() -> None:
    s = session()
    s.on_trades_missed(3)
    assert drain(s) == []
    s.receive(subscribe(["trades"]))
    s.on_trades_missed(3)
    assert drain(s)[1] == {"type": "resync", "seq": 2, "channel": "trades",
                           "reason": "trades_missed", "missed": 3}  # fmt: skip
