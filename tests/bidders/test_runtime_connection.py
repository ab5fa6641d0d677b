"""The bidder runtime's connection life: reconnects, backoff, giving up and refusals."""

from __future__ import annotations

import asyncio
import random
from http import HTTPStatus

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bidders.events import BidderEvent, Connected, Disconnected
from bidders.pricing import PPM, TimeOfDaySchedule
from bidders.runtime import Backoff, BidderGaveUp, BidderOptions, BidderRefused
from tests.bidders.runtime_kit import HOUR, Market, P, make_bidder, plan, start, wait_until


async def test_reconnects_and_resends_everything_after_a_drop(market: tuple[Market, str]) -> None:
    m, url = market
    events: list[BidderEvent] = []
    now = [HOUR * 5]
    night = TimeOfDaySchedule.off_peak(
        P(1_000_000), P(2_000_000), discount_ppm=PPM // 2, start_hour=6, end_hour=7
    )
    bidder = make_bidder(url, [plan("a"), plan("night", night)], events, clock=lambda: now[0])
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: len(m.of_type(0, "quote")) == 1)
    now[0] = HOUR * 6
    await wait_until(lambda: len(m.of_type(0, "quote")) == 2)  # seq 2 re-prices "night" only
    await m.sockets[0].close(1012, "restarting")
    await wait_until(lambda: len(m.of_type(1, "quote")) >= 1)
    hello, first = m.frames[1][0], m.frames[1][1]
    assert hello["type"] == "hello"
    assert first["seq"] == 1  # a new session numbers from 1 again
    offers = first["offers"]
    assert isinstance(offers, list)
    assert [(o["offer_id"], o["input_usd_per_mtok"]) for o in offers] == [
        ("a", "0.59"),
        ("night", "0.5"),
    ]
    dropped = [e for e in events if isinstance(e, Disconnected)]
    assert dropped[0].retry_in_ms is not None and 0 <= dropped[0].retry_in_ms <= 10
    assert [e for e in events if isinstance(e, Connected)] == [
        Connected("s0", 60),
        Connected("s1", 60),
    ]
    bidder.stop()
    await asyncio.wait_for(task, 3)


async def test_reconnects_after_the_marketplace_restarts() -> None:
    m = Market()
    server = await start(m)
    port = server.sockets[0].getsockname()[1]
    events: list[BidderEvent] = []
    bidder = make_bidder(f"ws://127.0.0.1:{port}/v1/bidders/ws", [plan("a")], events)
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: "a" in m.book)
    server.close()
    await server.wait_closed()
    await wait_until(lambda: sum(isinstance(e, Disconnected) for e in events) >= 3)
    again = Market()
    server = await start(again, port)
    try:
        await wait_until(lambda: "a" in again.book)
        assert again.of_type(0, "quote")[0]["seq"] == 1
        retries = [e.retry_in_ms for e in events if isinstance(e, Disconnected)]
        assert all(r is not None and 0 <= r <= 40 for r in retries)  # capped
        bidder.stop()
        await asyncio.wait_for(task, 3)
    finally:
        server.close()
        await server.wait_closed()


async def test_gives_up_after_max_failures_with_bounded_delays() -> None:
    server = await serve(lambda ws: ws.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on the port now
    events: list[BidderEvent] = []
    options = BidderOptions(backoff=Backoff(base_ms=5, cap_ms=20), max_failures=4)
    bidder = make_bidder(f"ws://127.0.0.1:{port}/", [plan("a")], events, options=options)
    with pytest.raises(BidderGaveUp, match="4 connections"):
        await asyncio.wait_for(bidder.run(), 5)
    delays = [e.retry_in_ms for e in events if isinstance(e, Disconnected)]
    assert len(delays) == 3
    assert all(d is not None and 0 <= d <= min(20, 5 * 2**n) for n, d in enumerate(delays, 1))


def test_backoff_is_full_jitter_and_capped() -> None:
    backoff = Backoff(base_ms=100, cap_ms=1_000)
    rng = random.Random(3)
    for attempt in range(12):
        bound = min(1_000, 100 * 2**attempt)
        samples = [backoff.delay_ms(attempt, rng) for _ in range(300)]
        assert min(samples) >= 0 and max(samples) <= bound
        assert max(samples) > bound * 0.8 and min(samples) < bound * 0.2  # spread, not fixed
    assert backoff.delay_ms(10**6, rng) <= 1_000  # huge attempts do not overflow


async def test_a_wrong_token_is_refused_for_good(market: tuple[Market, str]) -> None:
    m, url = market
    events: list[BidderEvent] = []
    bidder = make_bidder(url, [plan("a")], events, token="wrong")
    with pytest.raises(BidderRefused, match="401"):
        await asyncio.wait_for(bidder.run(), 3)
    assert m.frames == [] and events == []


async def test_a_hello_for_another_provider_is_refused_for_good(
    market: tuple[Market, str],
) -> None:
    m, url = market
    bidder = make_bidder(url, [plan("a")], [], provider="someone-else")
    with pytest.raises(BidderRefused, match="wrong_provider"):
        await asyncio.wait_for(bidder.run(), 3)
    assert len(m.frames) == 1 and m.book == {}


async def test_stop_during_backoff_returns_promptly() -> None:
    server = await serve(lambda ws: ws.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    events: list[BidderEvent] = []
    slow = BidderOptions(backoff=Backoff(base_ms=60_000, cap_ms=60_000))
    bidder = make_bidder(f"ws://127.0.0.1:{port}/", [plan("a")], events, options=slow)
    task = asyncio.create_task(bidder.run())
    await wait_until(lambda: any(isinstance(e, Disconnected) for e in events))
    bidder.stop()
    await asyncio.wait_for(task, 1)


async def test_other_upgrade_refusals_are_retried_then_given_up() -> None:
    def busy(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")

    events: list[BidderEvent] = []
    options = BidderOptions(backoff=Backoff(base_ms=1, cap_ms=5), max_failures=2)
    async with serve(lambda ws: ws.close(), "127.0.0.1", 0, process_request=busy) as server:
        port = server.sockets[0].getsockname()[1]
        bidder = make_bidder(f"ws://127.0.0.1:{port}/", [plan("a")], events, options=options)
        with pytest.raises(BidderGaveUp, match="HTTP 503"):
            await asyncio.wait_for(bidder.run(), 5)
    (event,) = events  # the second failure gives up instead of scheduling a retry
    assert isinstance(event, Disconnected) and event.reason == "upgrade refused with HTTP 503"


async def test_a_4003_close_during_the_handshake_is_refused_for_good() -> None:
    async def slam(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(4003, "not yours")

    async with serve(slam, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        bidder = make_bidder(f"ws://127.0.0.1:{port}/", [plan("a")], [])
        with pytest.raises(BidderRefused, match="not yours"):
            await asyncio.wait_for(bidder.run(), 3)
