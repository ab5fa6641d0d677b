"""Property tests of the feed session: garbage input, seq and the local book against the replica."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from auction.book_stream import ChangeKind
from auction.feed import ChangeLog
from auction.feed_wire import WireTrade
from auction.feed_writer import frame_header
from tests.auction.feed_kit import (
    MODELS,
    View,
    change,
    drain,
    local_book,
    log_session,
    logged,
    offer,
    parse_frames,
    session,
    subscribe,
    trade,
)

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
