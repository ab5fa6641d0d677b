"""The feed session's conflation, its bound on pending messages (4008) and heartbeats."""

from __future__ import annotations

import pytest

from auction.book_stream import BookChange, ChangeKind
from auction.feed import CLOSE_SLOW_CONSUMER, SnapshotCache
from auction.feed_wire import WireChange, WireTrade
from clearing.money import format_price
from tests.auction.feed_kit import View, change, drain, offer, session, subscribe, trade


# -- conflation -----------------------------------------------------------------------------------
def test_a_lagging_client_gets_the_latest_state_once_per_offer() -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    drain(s)
    for price in range(1, 101):
        s.on_change(view.apply(change("changed", offer(price=price))))
    s.on_change(view.apply(change("capacity", offer(), in_flight=5, tokens=10)))
    s.on_change(view.apply(change("new", offer("other"))))
    first, second = drain(s)
    assert (first["seq"], second["seq"]) == (3, 4)
    assert first["kind"] == "changed" and first["offer"]["input_usd_per_mtok"] == "0.0001"
    assert first["in_flight"] == 5 and first["tokens_this_minute"] == 10
    assert second["ref"] == "acme/other"
    assert s.conflated == 100


@pytest.mark.parametrize(
    ("kinds", "final"),
    [
        (["changed", "withdrawn", "capacity"], "withdrawn"),  # a withdrawn offer stays withdrawn
        (["new", "capacity", "expired"], "expired"),
        (["withdrawn", "new", "changed"], "new"),  # gone and back: the client must add it
        (["capacity", "changed"], "changed"),
        (["new", "changed", "capacity"], "new"),
    ],
)
def test_conflation_rules(kinds: list[ChangeKind], final: str) -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    drain(s)
    for i, kind in enumerate(kinds):
        s.on_change(view.apply(change(kind, offer(price=1000 + i), in_flight=i, tokens=i)))
    (update,) = drain(s)
    assert update["kind"] == final
    if final in ("withdrawn", "expired"):
        assert set(update) == {"type", "seq", "kind", "model", "ref", "ts"}
    else:
        last = max(i for i, k in enumerate(kinds) if k in ("new", "changed"))
        assert update["offer"]["input_usd_per_mtok"] == format_price(1000 + last)


def test_changes_while_a_snapshot_waits_are_in_the_snapshot() -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    s.on_change(view.apply(change("new", offer("a"))))
    s.on_change(view.apply(change("new", offer("b"))))
    s.on_change(view.apply(change("withdrawn", offer("a"))))
    _ack, snap = drain(s)
    assert [o["offer_id"] for o in snap["offers"]] == ["b"]


def test_a_replica_resync_sends_a_fresh_snapshot_in_place_of_waiting_updates() -> None:
    view = View()
    s = session(view)
    s.receive(subscribe(["book"], ["gpt-4o", "mistral-small"]))
    drain(s)
    s.on_change(view.apply(change("new", offer("a"))))
    view.index.remove("acme/a")  # the reload found the offer gone
    view.versions["gpt-4o"] = 9
    s.on_change(WireChange.of(BookChange("resync", "gpt-4o", "", 9, 1, "9-0")))
    (snap,) = drain(s)
    assert snap["type"] == "snapshot" and snap["reason"] == "resync" and snap["offers"] == []


def test_snapshot_bodies_are_reused_until_the_book_changes() -> None:
    view = View()
    cache = SnapshotCache(view)
    view.apply(change("new", offer()))
    first = cache.body("gpt-4o")
    assert cache.body("gpt-4o") is first
    view.apply(change("capacity", offer(), in_flight=1))
    assert b'"in_flight":1' in cache.body("gpt-4o")


# -- the bound and 4008 --------------------------------------------------------------------------
def test_trades_past_the_bound_close_the_session_with_4008() -> None:
    s = session(max_pending=5)
    s.receive(subscribe(["trades"]))
    for ts in range(4):  # the ack and four trades: at the bound
        s.on_trade(WireTrade.of(trade(ts=ts)))
    assert s.close is None and s.pending == 5
    s.on_trade(WireTrade.of(trade(ts=99)))
    assert s.close is not None and s.close.code == CLOSE_SLOW_CONSUMER
    assert "slow consumer" in s.close.reason
    assert s.next_message() is None
    s.on_trade(WireTrade.of(trade()))
    s.receive(subscribe(["book"]))
    s.tick(10**9)
    assert s.next_message() is None


def test_a_client_that_keeps_up_is_never_cut_off() -> None:
    view = View()
    s = session(view, max_pending=3)
    s.receive(subscribe(["book", "trades"]))
    for i in range(1000):
        s.on_trade(WireTrade.of(trade(ts=i)))
        s.on_change(view.apply(change("changed", offer(price=i + 1))))
        assert len(drain(s)) >= 1
    assert s.close is None


def test_book_updates_alone_never_hit_the_bound() -> None:
    view = View()
    s = session(view, max_pending=3)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    for i in range(3_000):
        s.on_change(view.apply(change("changed", offer(f"o{i % 50}", price=i + 1))))
    assert s.close is None
    messages = drain(s)
    assert [m["type"] for m in messages] == ["subscribed", "snapshot"]
    assert len(messages[1]["offers"]) == 50


# -- heartbeat ------------------------------------------------------------------------------------
def test_heartbeats_are_due_every_interval_and_never_pile_up() -> None:
    s = session(heartbeat_ms=2500)
    s.tick(2499)
    assert drain(s) == []
    s.tick(2500)
    assert drain(s) == [{"type": "heartbeat", "seq": 1, "ts": 2500}]
    for now in range(5000, 50_000, 2500):  # the client does not read
        s.tick(now)
    beats = drain(s)
    assert beats == [{"type": "heartbeat", "seq": 2, "ts": 5000}]
    s.tick(49_999)
    assert drain(s) == []
    s.tick(50_000)
    assert drain(s)[0]["seq"] == 3
