"""Offers a book lost (Redis restarted empty) come back from the still-connected bidder."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from auction.book import Book
from auction.keys import Keys
from bidders.events import Acked, BidderEvent, Connected
from bidders.pricing import StaticPrices
from bidders.runtime import Backoff, Bidder, BidderOptions, OfferPlan
from clearing.money import parse_price
from tests.e2e.bidder_kit import MODEL, book_of, register, spawn, stop, until, ws_url
from tests.e2e.conftest import _wait_ready, free_port, settings_for


async def test_offers_lost_from_the_book_come_back_through_a_reconnect(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    settings = settings_for(redis_url, key_prefix, heartbeat_ms=300)
    book = Book(redis_client, Keys(key_prefix))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    events: list[BidderEvent] = []
    plan = OfferPlan(
        "o1",
        {"model": MODEL, "capacity": {"concurrency": 4}, "ttl_ms": 5000},
        StaticPrices(parse_price("0.5"), parse_price("1")),
    )
    options = BidderOptions(backoff=Backoff(base_ms=20, cap_ms=100), open_timeout_ms=2000)
    proc = spawn(settings, port)
    runtime: Bidder | None = None
    task: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(_wait_ready, proc, base)
        token = await register(base, "acme")
        runtime = Bidder(
            ws_url(base), token, "acme", [plan], options=options, on_event=events.append
        )
        task = asyncio.create_task(runtime.run())

        async def acked() -> bool:
            return any(isinstance(e, Acked) for e in events)

        await until(acked)
        assert set(await book_of(book)) == {"acme/o1"}
        # What a Redis restart without persistence does to the book: the model's keys are gone.
        lost = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:{{b:{MODEL}}}:*")]
        await redis_client.delete(*lost)
        assert await book_of(book) == {}

        async def restored() -> bool:
            connects = sum(isinstance(e, Connected) for e in events)
            return connects >= 2 and set(await book_of(book)) == {"acme/o1"}

        await until(restored, timeout=10)
    finally:
        if runtime is not None:
            runtime.stop()
        if task is not None:
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
        await stop(proc)
