"""Bidder sessions end to end beyond one process: fills, sessions of one provider on two server
processes sharing one Redis (`server_processes`), provider removal, and the bidder runtime
reconnecting after its server process is stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from websockets.exceptions import InvalidStatus

from auction.bidder_hub import CLOSE_PROVIDER_REMOVED
from auction.book import Book
from auction.keys import Keys
from bidders.events import Acked, BidderEvent, Connected, Disconnected
from bidders.pricing import StaticPrices
from bidders.runtime import Backoff, Bidder, BidderOptions, OfferPlan
from bidders.simulated.server import SimulatedProvider
from clearing.money import parse_price
from tests.e2e.bidder_kit import (
    MODEL,
    admin_of,
    ask,
    assert_fill,
    bidder,
    book_of,
    closed_with,
    completion,
    offer,
    quote,
    recv,
    register,
    spawn,
    stop,
    token_for,
    until,
    wins_at,
    ws_url,
)
from tests.e2e.conftest import (
    Marketplace,
    _wait_ready,
    free_port,
    server_processes,
    settings_for,
)


# -- fills -------------------------------------------------------------------------------------
async def test_a_fill_reaches_every_session_of_the_provider(market: Marketplace) -> None:
    sim = SimulatedProvider("openai")
    await sim.start()
    market.sims.append(sim)
    token = await token_for(market, "acme", sim.base_url)
    key = await market.add_key("alice")
    async with bidder(market.url, token, "acme") as ws, bidder(market.url, token, "acme") as ws2:
        await quote(ws, 1, offer("o1"))
        await market.market.replica.sync()
        reply = await completion(market.url, key)
        assert reply.status_code == 200, reply.text
        fill = await recv(ws)
        assert_fill(fill, reply, "o1")
        assert await recv(ws2) == fill


# -- several server processes on one Redis --------------------------------------------------------
@pytest.fixture(scope="module")
def two_processes(redis_url: str) -> Iterator[tuple[list[str], str]]:
    """Two marketplace processes on one Redis and prefix, shared by this module's tests."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        with server_processes(settings_for(redis_url, prefix), 2) as urls:
            yield urls, prefix
    finally:
        with redis.Redis.from_url(redis_url) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)


async def test_a_fill_reaches_a_session_held_by_another_process(
    two_processes: tuple[list[str], str], redis_url: str
) -> None:
    (one, two), _ = two_processes
    name = f"acme-{uuid.uuid4().hex[:6]}"
    async with SimulatedProvider("openai") as sim:
        token = await register(one, name, sim.base_url)
        async with admin_of(two) as http:
            reply = await http.post("/v1/admin/keys", json={"name": name, "budget_usd": "5"})
            key = str(reply.json()["api_key"])
        async with bidder(one, token, name) as ws:
            assert await quote(ws, 1, offer("o1")) == {"type": "ack", "seq": 1}
            await until(lambda: wins_at(two, key, name, "o1"))  # process two's replica has it
            reply = await completion(two, key)
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-auction-provider"] == name
            assert_fill(await recv(ws), reply, "o1")


async def test_sessions_of_one_provider_on_two_processes(
    two_processes: tuple[list[str], str], redis_client: aioredis.Redis
) -> None:
    (one, two), prefix = two_processes
    book = Book(redis_client, Keys(prefix))
    name = f"acme-{uuid.uuid4().hex[:6]}"
    token = await register(one, name)
    async with bidder(two, token, name) as b:
        async with bidder(one, token, name) as a:
            await quote(a, 1, offer("x"), offer("y"))
            await quote(b, 1, offer("x", "0.45"))  # the latest quote wins; b owns x now
            assert (await book_of(book))[f"{name}/x"].input_price == parse_price("0.45")

        async def only_x() -> bool:
            return {r for r in await book_of(book) if r.startswith(name)} == {f"{name}/x"}

        await until(only_x)  # a's close cancelled y, not x
        assert await ask(b, {"type": "withdraw", "seq": 2, "offer_ids": ["x"]}) == {
            "type": "ack", "seq": 2
        }  # fmt: skip
        assert not any(r.startswith(name) for r in await book_of(book))


async def test_removing_a_provider_closes_its_sessions_and_withdraws_its_offers(
    two_processes: tuple[list[str], str], redis_client: aioredis.Redis
) -> None:
    (one, two), prefix = two_processes
    book = Book(redis_client, Keys(prefix))
    name = f"acme-{uuid.uuid4().hex[:6]}"
    token = await register(one, name)
    async with bidder(one, token, name) as a, bidder(two, token, name) as b:
        await quote(a, 1, offer("x"))
        await quote(b, 1, offer("y", ttl_ms=300_000))
        # An offer no open session owns (its session's process died): only the removal takes it.
        orphan = dataclasses.replace((await book_of(book))[f"{name}/x"], offer_id="z")
        await book.upsert("dead-session", [orphan])
        async with admin_of(two) as http:
            reply = await http.delete(f"/v1/admin/providers/{name}")
        assert reply.status_code == 200, reply.text
        assert reply.json()["removed"] is True
        assert reply.json()["offers_withdrawn"] >= 1  # z at least; x and y may be cancelled first
        assert await closed_with(a) == CLOSE_PROVIDER_REMOVED
        assert await closed_with(b) == CLOSE_PROVIDER_REMOVED
    assert not any(r.startswith(name) for r in await book_of(book))
    with pytest.raises(InvalidStatus) as refused:
        async with bidder(one, token):
            pass
    assert refused.value.response.status_code == 401


# -- the bidder runtime across a restart ----------------------------------------------------------
async def test_the_bidder_runtime_reconnects_and_restores_its_offers(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    settings = settings_for(redis_url, key_prefix)
    book = Book(redis_client, Keys(key_prefix))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    events: list[BidderEvent] = []
    plans = [
        OfferPlan("o1", {"model": MODEL, "capacity": {"concurrency": 4}},
                  StaticPrices(parse_price("0.5"), parse_price("1"))),
        OfferPlan("o2", {"model": MODEL, "capacity": {"concurrency": 4}, "ttl_ms": 2000},
                  StaticPrices(parse_price("0.6"), parse_price("1"))),
    ]  # fmt: skip
    options = BidderOptions(backoff=Backoff(base_ms=20, cap_ms=100), open_timeout_ms=2000)

    async def acked_after(connections: int) -> bool:
        seen = [e for e in events if isinstance(e, Connected)]
        return len(seen) >= connections and isinstance(events[-1], Acked)

    async def disconnected() -> bool:
        return any(isinstance(e, Disconnected) for e in events)

    procs = [spawn(settings, port)]
    runtime: Bidder | None = None
    task: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(_wait_ready, procs[0], base)
        token = await register(base, "acme")
        runtime = Bidder(
            ws_url(base), token, "acme", plans, options=options, on_event=events.append
        )
        task = asyncio.create_task(runtime.run())
        await until(lambda: acked_after(1))
        assert set(await book_of(book)) == {"acme/o1", "acme/o2"}
        await stop(procs[0])
        await until(disconnected)
        assert await book_of(book) == {}  # the server cancelled the session as it went down
        procs.append(spawn(settings, port))  # restarted on the same port
        await asyncio.to_thread(_wait_ready, procs[1], base)
        await until(lambda: acked_after(2), timeout=10)
        sessions = [e.session for e in events if isinstance(e, Connected)]
        assert len(set(sessions)) == len(sessions) >= 2
        assert set(await book_of(book)) == {"acme/o1", "acme/o2"}
        runtime.stop()
        await asyncio.wait_for(task, 5)  # stops cleanly (and raised nothing)
    finally:
        if runtime is not None and task is not None:
            runtime.stop()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
        for proc in procs:
            await stop(proc)
