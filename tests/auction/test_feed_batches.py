"""The feed session's batched frames (batch_ms): arrays of unchanged messages, seq running on."""

from __future__ import annotations

import json

import pytest

from auction.feed_wire import WireTrade
from clearing.money import format_price
from tests.auction.feed_kit import (
    View,
    batched,
    batches,
    change,
    drain,
    offer,
    session,
    subscribe,
    trade,
)


def test_batched_frames_are_arrays_of_unchanged_messages_with_seq_running_on() -> None:
    view = View()
    view.apply(change("new", offer("a")))
    plain, s = session(view), session(view)
    plain.receive(subscribe(["book"], ["gpt-4o"]))
    s.receive(batched(50))
    assert s.batch_ms == 50 and plain.batch_ms is None
    ((ack, snap),) = batches(s)
    assert ack == {"type": "subscribed", "seq": 1, "channels": ["book"], "models": ["gpt-4o"],
                   "batch_ms": 50}  # fmt: skip
    assert snap == drain(plain)[1]
    for i in range(3):
        wire = view.apply(change("changed", offer(f"o{i}", price=100 + i)))
        s.on_change(wire)
        plain.on_change(wire)
    (first,) = batches(s)
    assert first == drain(plain)  # the same messages, the same seq
    assert [m["seq"] for m in first] == [3, 4, 5]
    s.on_change(view.apply(change("withdrawn", offer("o0"))))
    s.on_trade(WireTrade.of(trade()))  # not subscribed to trades: nothing
    assert batches(s) == [[{"type": "update", "seq": 6, "kind": "withdrawn", "model": "gpt-4o",
                           "ref": "acme/o0", "ts": 1_700_000_000_000}]]  # fmt: skip
    assert s.next_frame() is None


def test_a_batch_stops_growing_at_max_frame_chars_and_seq_goes_on_across_frames() -> None:
    view = View()
    s = session(view, max_frame_chars=2_000)
    s.receive(batched(10))
    batches(s)
    for i in range(20):
        s.on_change(view.apply(change("changed", offer(f"o{i}", price=100 + i))))
    sent = batches(s)
    assert len(sent) > 2
    seqs = [m["seq"] for batch in sent for m in batch]
    assert seqs == list(range(3, 23))
    assert all(len(json.dumps(batch)) < 2_000 + 1_000 for batch in sent)


def test_conflation_still_applies_to_a_batch_waiting_for_its_turn() -> None:
    view = View()
    s = session(view)
    s.receive(batched(250))
    batches(s)
    for price in range(1, 11):
        s.on_change(view.apply(change("changed", offer(price=price))))
    s.on_change(view.apply(change("capacity", offer(), in_flight=4, tokens=9)))
    ((update,),) = batches(s)
    assert update["seq"] == 3 and update["offer"]["input_usd_per_mtok"] == format_price(10)
    assert (update["in_flight"], update["tokens_this_minute"]) == (4, 9)
    assert s.conflated == 10


@pytest.mark.parametrize("bad", [9, 251, -10, "50", 50.0, 1.5, True, None, [50], {"ms": 50}])
def test_a_bad_batch_ms_is_an_error_and_nothing_of_the_subscribe_is_applied(bad: object) -> None:
    view = View()
    s = session(view)
    s.receive(batched(bad))
    (error,) = drain(s)
    assert error["type"] == "error" and error["code"] == "invalid_batch_ms" and error["seq"] == 1
    assert "batch_ms" in error["message"]
    assert s.batch_ms is None
    s.on_change(view.apply(change("new", offer())))  # not subscribed after all
    assert s.next_frame() is None


def test_batch_ms_stays_until_changed_and_zero_turns_it_off() -> None:
    s = session()
    s.receive(batched(10, ["trades"]))
    batches(s)
    s.receive(subscribe(["book"], ["gpt-4o"]))  # without batch_ms: still batched
    assert s.batch_ms == 10 and [m["type"] for m in batches(s)[0]] == ["subscribed", "snapshot"]
    s.receive(batched(0))
    ack = s.next_frame()  # batching is off from this acknowledgement on
    assert ack is not None and json.loads(ack)["batch_ms"] == 0 and ack.startswith(b"{")
    assert s.batch_ms is None and [m["type"] for m in drain(s)] == ["snapshot"]
    s.receive(json.dumps({"type": "unsubscribe", "channels": ["book"], "batch_ms": "ignored"}))
    assert [m["type"] for m in drain(s)] == ["unsubscribed"]
