"""The shared change log, folding, and frame headers as `websockets` reads them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Opcode

from auction.book_stream import BookChange
from auction.feed import ChangeLog
from auction.feed_wire import WireChange, WireTrade
from auction.feed_writer import frame_header
from clearing.money import PriceMicros, format_price
from tests.auction.feed_kit import (
    View,
    change,
    drain,
    log_session,
    logged,
    offer,
    parse_frames,
    subscribe,
    trade,
)


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


@given(st.lists(st.sampled_from([0, 1, 125, 126, 127, 65_535, 65_536, 70_000]), max_size=5))
def test_frame_headers_are_read_by_websockets_as_whole_text_frames(sizes: list[int]) -> None:
    payloads = [bytes([97 + i % 26]) * size for i, size in enumerate(sizes)]
    frames = parse_frames(b"".join(frame_header(len(p)) + p for p in payloads))
    assert [f.data for f in frames] == payloads
    assert all(f.opcode == Opcode.TEXT and f.fin and not f.rsv1 for f in frames)
