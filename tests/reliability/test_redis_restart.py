"""Redis goes away in the middle of traffic and comes back: 503s while away, recovery after."""

from __future__ import annotations

import asyncio
import random
import time

import httpx

from bidders.config import ws_url
from bidders.pricing import StaticPrices
from bidders.runtime import Backoff, Bidder, BidderOptions, OfferPlan
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from clearing.money import PriceMicros
from tests.e2e.conftest import Marketplace, running_market, settings_for
from tests.reliability.conftest import PrivateRedis

MODEL = "llama-3.1-70b-instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
FAST = BidderOptions(backoff=Backoff(base_ms=20, cap_ms=200), open_timeout_ms=2_000)


async def start_bidder(
    m: Marketplace, name: str, offer_id: str
) -> tuple[Bidder, asyncio.Task[None]]:
    """A simulated provider registered as `name`, quoted by a real bidder over the WebSocket."""
    sim = SimulatedProvider("openai", SimConfig())
    await sim.start()
    m.sims.append(sim)
    token = await m.add_provider(name, sim.base_url)
    plan = OfferPlan(
        offer_id,
        {"model": MODEL, "capacity": {"concurrency": 8}, "ttl_ms": 5_000},
        StaticPrices(PriceMicros(500_000), PriceMicros(1_000_000)),
    )
    bidder = Bidder(ws_url(m.url), token, name, [plan], options=FAST, rng=random.Random(1))
    return bidder, asyncio.create_task(bidder.run())


async def chat(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
    )


async def until_status(http: httpx.AsyncClient, key: str, status: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        last = await chat(http, key)
        if last.status_code == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {status} within {limit_s} s; last: {last and last.text}")


async def test_redis_restart_gives_503_then_recovers(
    private_redis: PrivateRedis, key_prefix: str
) -> None:
    settings = settings_for(private_redis.url, key_prefix, default_timeout_ms=3_000)
    async with running_market(settings) as m:
        bidder, task = await start_bidder(m, "acme", "o1")
        key = await m.add_key("alice", "10")
        async with httpx.AsyncClient(base_url=m.url, timeout=10) as http:
            await until_status(http, key, 200, 5)
            assert (await http.get("/readyz")).status_code == 200

            private_redis.stop()
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
            for _ in range(5):  # the cached key lets some requests reach the Redis steps
                started = time.monotonic()
                reply = await chat(http, key)
                assert time.monotonic() - started < 3.5, "past the request deadline"
                assert reply.status_code == 503, reply.text
                error = reply.json()["error"]
                assert error["code"] == "unavailable" and error["type"] == "service_unavailable"
                await asyncio.sleep(0.3)  # past the key cache

            private_redis.start()
            deadline = time.monotonic() + 10
            while (await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "not ready again after Redis came back"
                await asyncio.sleep(0.05)
            await until_status(http, key, 200, 10)  # the bidder's offer clears again
            account = await m.account(key)
            assert account["spent_usd"] != "0"
        bidder.stop()
        await asyncio.wait_for(task, 5)
