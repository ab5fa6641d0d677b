"""The sans-I/O feed session: subscriptions, snapshots, updates, conflation, the bound, seq,
the shared change log and frames."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from auction.book_stream import BookChange, ChangeKind
from auction.feed import CLOSE_SLOW_CONSUMER, ChangeLog, FeedLimits, FeedSession, SnapshotCache
from auction.feed_wire import Trade, WireChange, WireTrade
from auction.feed_writer import frame_header
from clearing.index import BookIndex
from clearing.money import Nanos, PriceMicros, format_price, parse_price
from clearing.types import Offer, OfferLive

MODELS = ("gpt-4o", "llama-3.1-8b-instruct", "mistral-small")


@dataclass
class View:
    """A book as a replica holds it: a real BookIndex, live state and version numbers."""

    index: BookIndex = field(default_factory=BookIndex)
    live: dict[str, OfferLive] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def version(self, model: str) -> int:
        return self.versions.get(model, 0)

    def apply(self, change: BookChange) -> WireChange:
        """Apply a change the way the replica does, and return its wire form."""
        self.versions[change.model] = self.version(change.model) + 1
        if change.kind in ("withdrawn", "expired", "cancelled"):
            self.index.remove(change.ref)
            self.live.pop(change.ref, None)
        elif change.offer is not None:
            self.index.upsert(change.offer)
        if change.in_flight is not None:
            self.live[change.ref] = OfferLive(change.in_flight, change.tokens or 0)
        return WireChange.of(change)


def offer(offer_id: str = "o1", model: str = "gpt-4o", price: int = 500_000, **kw: Any) -> Offer:
    fields: dict[str, Any] = {
        "provider": "acme",
        "offer_id": offer_id,
        "model": model,
        "input_price": PriceMicros(price),
        "output_price": PriceMicros(price * 3),
        "cached_input_price": PriceMicros(price // 2),
        "concurrency": 8,
        "quality": 88,
        "context_window": 128_000,
        "max_output_tokens": 4096,
        "features": frozenset({"tools"}),
        "seq": 1,
    }
    fields.update(kw)
    return Offer(**fields)


def change(kind: ChangeKind, o: Offer, **kw: Any) -> BookChange:
    with_offer = kind in ("new", "changed")
    fields: dict[str, Any] = {
        "kind": kind,
        "model": o.model,
        "ref": o.ref,
        "n": 0,
        "ts": 1_700_000_000_000,
        "stream_id": "1-0",
        "offer": o if with_offer else None,
        "in_flight": 0 if kind == "new" else None,
    }
    fields.update(kw)
    return BookChange(**fields)


def session(view: View | None = None, **limits: int) -> FeedSession:
    view = view or View()
    return FeedSession(view, MODELS, FeedLimits(**limits), now_ms=0)


def drain(s: FeedSession) -> list[dict[str, Any]]:
    out = []
    while (text := s.next_message()) is not None:
        message = json.loads(text)
        assert isinstance(message, dict)
        out.append(message)
    return out


def subscribe(channels: list[str], models: list[str] | None = None) -> str:
    message: dict[str, object] = {"type": "subscribe", "channels": channels}
    if models is not None:
        message["models"] = models
    return json.dumps(message)


def trade(model: str = "gpt-4o", ts: int = 1) -> Trade:
    return Trade(model, "acme", "o1", PriceMicros(590_000), PriceMicros(790_000), 812, 240,
                 Nanos(670_000), ts)  # fmt: skip


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


# -- batched frames (batch_ms) --------------------------------------------------------------------
def batches(s: FeedSession) -> list[list[dict[str, Any]]]:
    """Every frame `next_frame` gives, each parsed as a JSON array."""
    out: list[list[dict[str, Any]]] = []
    for _ in range(10_000):
        text = s.next_frame()
        if text is None:
            return out
        batch = json.loads(text)
        assert isinstance(batch, list) and batch
        out.append(batch)
    raise AssertionError("next_frame never ran dry")


def batched(batch_ms: object, channels: list[str] | None = None) -> str:
    message = json.loads(subscribe(channels or ["book"], ["gpt-4o"]))
    return json.dumps({**message, "batch_ms": batch_ms})


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


# -- properties -----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
frames = st.one_of(
    st.text(max_size=64),
    st.binary(max_size=32),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe", "x"])},
        optional={
            "channels": st.lists(st.sampled_from(["book", "trades", "", 1]), max_size=3)
            | json_values,
            "models": st.lists(st.sampled_from([*MODELS, "*", "nope", 2]), max_size=3)
            | json_values,
        },
    ).map(json.dumps),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames, max_size=12))
def test_garbage_from_the_client_never_breaks_the_session(inputs: list[str | bytes]) -> None:
    s = session()
    for frame in inputs:
        s.receive(frame)
    messages = drain(s)
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    for m in messages:
        assert m["type"] in ("error", "subscribed", "unsubscribed", "snapshot")
        if m["type"] == "error":
            assert isinstance(m["code"], str) and isinstance(m["message"], str)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    assert [m["type"] for m in drain(s)] == ["subscribed", "snapshot"]


Step = tuple[str, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(["change", "remove", "trade", "tick", "drain", "frame"]), st.integers(0, 5)
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_seq_rises_by_one_and_the_local_book_ends_equal_to_the_replica(plan: list[Step]) -> None:
    view = View()
    s = session(view, max_pending=10_000)
    s.receive(subscribe(["book", "trades"], ["gpt-4o"]))
    seen: list[dict[str, Any]] = []
    now = 0
    for action, i in plan:
        o = offer(f"o{i}", price=1000 + len(seen) + i)
        if action == "change":
            kind: ChangeKind = "new" if view.index.get(o.ref) is None else "changed"
            s.on_change(view.apply(change(kind, o, in_flight=i, tokens=i)))
        elif action == "remove" and view.index.get(o.ref) is not None:
            s.on_change(view.apply(change("withdrawn", o)))
        elif action == "trade":
            s.on_trade(WireTrade.of(trade(ts=i)))
        elif action == "tick":
            now += 1000 * i
            s.tick(now)
        elif action == "drain":
            seen.extend(drain(s))
        elif action == "frame":
            s.receive(subscribe(["book"], ["gpt-4o"]) if i == 0 else "?")
    seen.extend(drain(s))
    assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))
    assert local_book(seen) == {o.ref: o.input_price for o in view.index.offers("gpt-4o")}


def local_book(messages: list[dict[str, Any]]) -> Mapping[str, int]:
    book: dict[str, int] = {}
    for m in messages:
        if m["type"] == "snapshot":
            book = {f"acme/{o['offer_id']}": _micros(o) for o in m["offers"]}
        elif m["type"] == "update" and "offer" in m:
            book[m["ref"]] = _micros(m["offer"])
        elif m["type"] == "update" and m["kind"] == "withdrawn":
            book.pop(m["ref"], None)
    return book


def _micros(wire: Mapping[str, Any]) -> int:
    return parse_price(wire["input_usd_per_mtok"])


# -- the shared change log, folding and frames ----------------------------------------------------
def logged(view: View, log: ChangeLog, kind: ChangeKind, o: Offer, **kw: Any) -> None:
    """A change the replica applied, appended to the shared log as the hub does."""
    log.append(view.apply(change(kind, o, **kw)))


def log_session(view: View, log: ChangeLog, **limits: int) -> FeedSession:
    return FeedSession(view, MODELS, FeedLimits(**limits), now_ms=0, log=log)


def test_sessions_keeping_up_with_the_log_get_every_change_in_order() -> None:
    view, log = View(), ChangeLog()
    a, b = log_session(view, log), log_session(view, log)
    for s in (a, b):
        s.receive(subscribe(["book"], ["gpt-4o"]))
    logged(view, log, "new", offer("o1"))  # before the snapshots are built: in them
    assert [m["type"] for m in drain(a)] == ["subscribed", "snapshot"]
    for price in (1, 2, 3):
        logged(view, log, "changed", offer("o1", price=price))
        logged(view, log, "new", offer(f"x{price}", model="mistral-small"))  # not followed
        (update,) = drain(a)
        assert update["seq"] == 2 + price and update["offer"]["input_usd_per_mtok"] == (
            format_price(PriceMicros(price))
        )
    messages = drain(b)  # b read nothing yet: its snapshot, then every change after it
    assert [m["type"] for m in messages] == ["subscribed", "snapshot"]
    assert [o["offer_id"] for o in messages[1]["offers"]] == ["o1"]
    assert messages[1]["offers"][0]["input_usd_per_mtok"] == format_price(PriceMicros(3))
    logged(view, log, "withdrawn", offer("o1"))
    assert [(m["kind"], m["seq"]) for m in drain(b)] == [("withdrawn", 3)]
    assert [m["kind"] for m in drain(a)] == ["withdrawn"]
    assert a.conflated == 0 and b.cursor == a.cursor == log.end


def test_a_folded_session_conflates_what_it_had_not_read() -> None:
    view, log = View(), ChangeLog()
    s = log_session(view, log)
    s.receive(subscribe(["book", "trades"], ["gpt-4o"]))
    drain(s)
    for price in range(1, 51):
        logged(view, log, "changed", offer("o1", price=price))
        if price == 10:
            s.on_trade(WireTrade.of(trade(ts=10)))  # after the first ten changes
    s.fold()  # the client lagged: the fifty changes become one update, before the trade
    first, second = drain(s)
    assert first["type"] == "update" and first["offer"]["input_usd_per_mtok"] == format_price(
        PriceMicros(50)
    )
    assert second["type"] == "trade" and s.conflated == 49
    logged(view, log, "changed", offer("o1", price=60))  # back to reading the log
    (update,) = drain(s)
    assert update["seq"] == 5 and update["offer"]["input_usd_per_mtok"] == "0.00006"


def test_a_resync_in_the_log_is_a_snapshot_at_its_place() -> None:
    view, log = View(), ChangeLog()
    s = log_session(view, log)
    s.receive(subscribe(["book"], ["gpt-4o"]))
    drain(s)
    logged(view, log, "new", offer("a"))
    view.index.remove("acme/a")
    view.versions["gpt-4o"] = 9
    log.append(WireChange.of(BookChange("resync", "gpt-4o", "", 9, 1, "9-0")))
    logged(view, log, "new", offer("b"))
    messages = drain(s)
    assert [(m["type"], m.get("reason")) for m in messages] == [
        ("update", None),
        ("snapshot", "resync"),
    ]  # "b" was applied before the snapshot was built: it is in it, not sent again
    assert [o["offer_id"] for o in messages[1]["offers"]] == ["b"]


def test_the_log_forgets_only_what_every_reader_passed() -> None:
    log = ChangeLog()
    for i in range(5):
        log.append(WireChange.of(change("new", offer(f"o{i}"))))
    log.trim(3)
    assert (log.base, log.end, len(log.entries)) == (3, 5, 2)
    log.trim(1)  # already gone: nothing happens
    log.trim(99)
    assert (log.base, log.end, log.entries) == (5, 5, [])


def parse_frames(data: bytes) -> list[Frame]:
    """Server frames as the `websockets` library reads them."""
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frames.append(done.value.value)
    return frames


@given(st.lists(st.sampled_from([0, 1, 125, 126, 127, 65_535, 65_536, 70_000]), max_size=5))
def test_frame_headers_are_read_by_websockets_as_whole_text_frames(sizes: list[int]) -> None:
    payloads = [bytes([97 + i % 26]) * size for i, size in enumerate(sizes)]
    frames = parse_frames(b"".join(frame_header(len(p)) + p for p in payloads))
    assert [f.data for f in frames] == payloads
    assert all(f.opcode == Opcode.TEXT and f.fin and not f.rsv1 for f in frames)


Plan = list[tuple[str, int]]
log_steps = st.lists(
    st.tuples(
        st.sampled_from(["change", "remove", "trade", "tick", "drain", "frames", "fold", "frame"]),
        st.integers(0, 5),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(log_steps)
def test_log_readers_number_by_one_keep_event_order_and_end_equal_to_the_replica(
    plan: Plan,
) -> None:
    view, log = View(), ChangeLog()
    lagging, keeping_up = log_session(view, log, max_pending=10_000), log_session(view, log)
    for s in (lagging, keeping_up):
        s.receive(subscribe(["book", "trades"], ["gpt-4o"]))
    seen: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = drain(keeping_up)
    events: list[tuple[str, object]] = []  # what keeping_up must see, in order
    now = 0
    for action, i in plan:
        o = offer(f"o{i}", price=1000 + len(events) + i)
        if action == "change":
            kind: ChangeKind = "new" if view.index.get(o.ref) is None else "changed"
            logged(view, log, kind, o, in_flight=i, tokens=i)
            events.append(("update", o.ref))
        elif action == "remove" and view.index.get(o.ref) is not None:
            logged(view, log, "withdrawn", o)
            events.append(("update", o.ref))
        elif action == "trade":
            for s in (lagging, keeping_up):
                s.on_trade(WireTrade.of(trade(ts=i)))
            events.append(("trade", i))
        elif action == "tick":
            now += 1000 * i
            lagging.tick(now)
        elif action == "drain":
            seen.extend(drain(lagging))
        elif action == "frames":
            out: list[bytes] = []
            lagging.write_frames(out, 1 + 300 * i, frame_header)
            seen.extend(json.loads(bytes(f.data)) for f in parse_frames(b"".join(out)))
        elif action == "fold":
            lagging.fold()
        elif action == "frame":
            lagging.receive(subscribe(["book"], ["gpt-4o"]) if i == 0 else "?")
        kept.extend(drain(keeping_up))
    seen.extend(drain(lagging))
    assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))
    assert local_book(seen) == {o.ref: o.input_price for o in view.index.offers("gpt-4o")}
    assert [m["seq"] for m in kept] == list(range(1, len(kept) + 1))
    got = [(m["type"], m.get("ref", m.get("ts"))) for m in kept[2:]]
    assert got == events and keeping_up.conflated == 0
