"""The bidder runtime against a tiny real WebSocket marketplace on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bidders.events import (
    Acked,
    BidderEvent,
    Connected,
    Disconnected,
    Filled,
    Rejected,
)
from bidders.messages import Fill, fill_message
from bidders.pricing import (
    PPM,
    PricingStrategy,
    StaticPrices,
    TimeOfDaySchedule,
    UtilizationPricing,
)
from bidders.runtime import (
    QUOTE_CHUNK,
    Backoff,
    Bidder,
    BidderGaveUp,
    BidderOptions,
    BidderRefused,
    OfferPlan,
    wall_ms,
)
from bidders.session import BidderSession, Close, Send, SessionLimits, Upsert
from clearing.catalogue import parse_catalogue
from clearing.money import Nanos, PriceMicros
from clearing.types import Offer

P = PriceMicros
TOKEN = "bt_test_token"
HOUR = 3_600_000
CATALOGUE = parse_catalogue(
    [
        {
            "id": "gpt-4o",
            "quality": 85,
            "context_window": 128000,
            "max_output_tokens": 16384,
            "features": ["tools", "vision", "json_mode", "streaming"],
        }
    ]
)
FAST = BidderOptions(
    agent="test-bidder/1",
    reprice_ms=20,
    backoff=Backoff(base_ms=10, cap_ms=40),
    open_timeout_ms=2_000,
)


@dataclass
class Market:
    """A marketplace reduced to the bidder route: token check, the real session, a list book."""

    heartbeat_ms: int = 60
    provider: str = "acme"
    frames: list[list[dict[str, object]]] = field(default_factory=list)  # per connection
    book: dict[str, Offer] = field(default_factory=dict)
    close_codes: list[int | None] = field(default_factory=list)
    sockets: list[ServerConnection] = field(default_factory=list)
    on_frame: Callable[[ServerConnection, dict[str, object]], None] | None = None

    def check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad bidder token\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        index = len(self.frames)
        self.frames.append([])
        self.sockets.append(ws)
        limits = SessionLimits(heartbeat_ms=self.heartbeat_ms)
        session = BidderSession(self.provider, CATALOGUE, limits, f"s{index}", now_ms=0)
        try:
            async for raw in ws:
                self.frames[index].append(json.loads(raw))
                for action in session.receive(raw, now_ms=0):
                    await self._perform(ws, action)
        finally:
            session.connection_lost()
            self.close_codes.append(ws.close_code)

    async def _perform(self, ws: ServerConnection, action: object) -> None:
        if isinstance(action, Send):
            await ws.send(action.text)
        elif isinstance(action, Close):
            await ws.close(action.code, action.reason)
        elif isinstance(action, Upsert):
            self.book.update({o.offer_id: o for o in action.offers})

    def of_type(self, connection: int, kind: str) -> list[dict[str, object]]:
        if connection >= len(self.frames):
            return []
        return [f for f in self.frames[connection] if f.get("type") == kind]


async def start(market: Market, port: int = 0) -> Server:
    return await serve(market.handle, "127.0.0.1", port, process_request=market.check_token)


@pytest.fixture
async def market() -> AsyncIterator[tuple[Market, str]]:
    m = Market()
    server = await start(m)
    port = server.sockets[0].getsockname()[1]
    try:
        yield m, f"ws://127.0.0.1:{port}/v1/bidders/ws"
    finally:
        server.close()
        await server.wait_closed()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def plan(offer_id: str, strategy: PricingStrategy | None = None, **fields: object) -> OfferPlan:
    body = {"model": "gpt-4o", "capacity": {"concurrency": 4}, **fields}
    return OfferPlan(offer_id, body, strategy or StaticPrices(P(590_000), P(790_000)))


def make_bidder(
    url: str,
    plans: list[OfferPlan],
    events: list[BidderEvent],
    *,
    token: str = TOKEN,
    provider: str = "acme",
    options: BidderOptions = FAST,
    clock: Callable[[], int] = wall_ms,
) -> Bidder:
    return Bidder(
        url,
        token,
        provider,
        plans,
        options=options,
        on_event=events.append,
        clock=clock,
        rng=random.Random(1),
    )


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
