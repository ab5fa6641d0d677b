"""The bidder runtime against a tiny real WebSocket marketplace: hello, quotes, re-quotes, fills."""

from __future__ import annotations

import asyncio
import json

from bidders.events import Acked, BidderEvent, Connected, Disconnected, Filled, Rejected
from bidders.messages import Fill, fill_message
from bidders.pricing import PPM, TimeOfDaySchedule, UtilizationPricing
from bidders.runtime import QUOTE_CHUNK
from clearing.money import Nanos
from tests.bidders.runtime_kit import HOUR, Market, P, make_bidder, plan, wait_until


async def test_hello_quote_heartbeat_then_clean_stop(market: tuple[Market, str]) -> None:
    m, url = market
    events: list[BidderEvent] = []
    bidder = make_bidder(url, [plan("a"), plan("b", cached_input_usd_per_mtok="0.30")], events)
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: len(m.of_type(0, "heartbeat")) >= 2)
    frames = m.frames[0]
    assert frames[0] == {
        "type": "hello",
        "provider": "acme",
        "protocol": 1,
        "agent": "test-bidder/1",
    }
    assert frames[1] == {
        "type": "quote",
        "seq": 1,
        "offers": [
            {
                "offer_id": "a",
                "model": "gpt-4o",
                "capacity": {"concurrency": 4},
                "input_usd_per_mtok": "0.59",
                "output_usd_per_mtok": "0.79",
            },
            {
                "offer_id": "b",
                "model": "gpt-4o",
                "capacity": {"concurrency": 4},
                "cached_input_usd_per_mtok": "0.3",
                "input_usd_per_mtok": "0.59",
                "output_usd_per_mtok": "0.79",
            },
        ],
    }
    assert set(m.book) == {"a", "b"} and m.book["b"].cached_input_price == 300_000
    assert len(m.of_type(0, "quote")) == 1  # static prices: no re-quote
    assert events[:2] == [Connected("s0", 60), Acked(1)]
    bidder.stop()
    await asyncio.wait_for(task, 3)
    await wait_until(lambda: m.close_codes == [1000])
    assert events[-1] == Disconnected("closed with code 1000", None)
    assert len(m.frames) == 1


async def test_heartbeats_follow_the_welcomes_interval(market: tuple[Market, str]) -> None:
    m, url = market
    bidder = make_bidder(url, [plan("a")], [])
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: len(m.of_type(0, "heartbeat")) >= 1)
    start = asyncio.get_running_loop().time()
    await wait_until(lambda: len(m.of_type(0, "heartbeat")) >= 6)
    elapsed = asyncio.get_running_loop().time() - start
    bidder.stop()
    await asyncio.wait_for(task, 3)
    assert 5 * 0.06 * 0.8 <= elapsed <= 5 * 0.06 * 6  # five intervals of 60 ms, not ticks


async def test_requotes_only_the_offers_whose_prices_moved(market: tuple[Market, str]) -> None:
    m, url = market
    now = [HOUR * 5 + 1]
    night = TimeOfDaySchedule.off_peak(
        P(1_000_000), P(2_000_000), discount_ppm=PPM // 2, start_hour=6, end_hour=7
    )
    bidder = make_bidder(url, [plan("night", night), plan("flat")], [], clock=lambda: now[0])
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: "night" in m.book)
    assert m.book["night"].input_price == 1_000_000
    now[0] = HOUR * 6  # 06:00 UTC: the discount starts
    await wait_until(lambda: len(m.of_type(0, "quote")) >= 2)
    second = m.of_type(0, "quote")[1]
    assert second["seq"] == 2
    assert second["offers"] == [
        {
            "offer_id": "night",
            "model": "gpt-4o",
            "capacity": {"concurrency": 4},
            "input_usd_per_mtok": "0.5",
            "output_usd_per_mtok": "1.0",
        }
    ]
    await wait_until(lambda: m.book["night"].input_price == 500_000)
    bidder.stop()
    await asyncio.wait_for(task, 3)


async def test_fills_reach_the_strategy_and_move_the_price(market: tuple[Market, str]) -> None:
    m, url = market
    events: list[BidderEvent] = []
    busy = UtilizationPricing(
        (P(1_000_000), P(2_000_000)), (P(4_000_000), P(8_000_000)), capacity=1, half_life_ms=10**9
    )
    bidder = make_bidder(url, [plan("u", busy)], events)
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: "u" in m.book)
    fill = Fill("u", "clr_1", "gpt-4o", 812, 240, Nanos(670_000), 1796000000000)
    await m.sockets[0].send(json.dumps(fill_message(fill)))
    await wait_until(lambda: m.book["u"].input_price == 4_000_000)
    assert Filled(fill) in events
    assert m.of_type(0, "quote")[1]["offers"][0]["output_usd_per_mtok"] == "8.0"  # type: ignore[index]
    bidder.stop()
    await asyncio.wait_for(task, 3)


async def test_report_load_moves_the_price_at_once(market: tuple[Market, str]) -> None:
    m, url = market
    busy = UtilizationPricing(
        (P(1_000_000), P(2_000_000)), (P(4_000_000), P(8_000_000)), capacity=2, half_life_ms=10**9
    )
    bidder = make_bidder(url, [plan("u", busy)], [])
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: "u" in m.book)
    bidder.report_load("u", 2, 2)
    bidder.report_load("unknown", 2, 2)  # ignored
    await wait_until(lambda: m.book["u"].input_price == 4_000_000)
    bidder.stop()
    await asyncio.wait_for(task, 3)


async def test_rejected_offers_are_reported(market: tuple[Market, str]) -> None:
    m, url = market
    events: list[BidderEvent] = []
    bidder = make_bidder(url, [plan("ok"), plan("bad", model="gpt-99")], events)
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: any(isinstance(e, Rejected) for e in events))
    rejected = next(e for e in events if isinstance(e, Rejected))
    assert rejected.seq == 1 and [e.offer_id for e in rejected.errors] == ["bad"]
    assert "not in the catalogue" in rejected.errors[0].message
    assert set(m.book) == {"ok"}
    bidder.stop()
    await asyncio.wait_for(task, 3)


async def test_many_offers_are_quoted_in_chunks(market: tuple[Market, str]) -> None:
    m, url = market
    count = QUOTE_CHUNK * 2 + 7
    bidder = make_bidder(url, [plan(f"o{i}") for i in range(count)], [])
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: len(m.book) == count)
    quotes = m.of_type(0, "quote")
    assert [q["seq"] for q in quotes] == [1, 2, 3]
    assert [len(q["offers"]) for q in quotes] == [QUOTE_CHUNK, QUOTE_CHUNK, 7]  # type: ignore[arg-type]
    bidder.stop()
    await asyncio.wait_for(task, 3)


async def test_a_malformed_fill_is_ignored(market: tuple[Market, str]) -> None:
    m, url = market
    events: list[BidderEvent] = []
    bidder = make_bidder(url, [plan("a")], events)
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: "a" in m.book)
    await m.sockets[0].send(json.dumps({"type": "fill", "offer_id": "a", "cost_usd": "x"}))
    await m.sockets[0].send("not json")
    await m.sockets[0].send(json.dumps({"type": "ack", "seq": 99}))
    await wait_until(lambda: Acked(99) in events)
    assert not any(isinstance(e, Filled) for e in events) and not task.done()
    bidder.stop()
    await asyncio.wait_for(task, 3)
