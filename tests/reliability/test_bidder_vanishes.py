"""A bidder that vanishes without a close frame: its offers stop clearing within their ttl."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bidders.config import ws_url
from tests.e2e.conftest import MarketFactory, Marketplace

MODEL = "llama-3.1-70b-instruct"
TTL_MS = 1_500
SWEEP_S = 1.0  # the market's expiry sweep runs every second


async def quote(m: Marketplace, token: str, provider: str) -> ClientConnection:
    ws = await connect(ws_url(m.url), additional_headers={"authorization": f"Bearer {token}"})
    hello = {"type": "hello", "provider": provider, "protocol": 1, "agent": "vanishing/1"}
    await ws.send(json.dumps(hello))
    offer = {
        "offer_id": "o1",
        "model": MODEL,
        "capacity": {"concurrency": 4},
        "input_usd_per_mtok": "0.50",
        "output_usd_per_mtok": "1.00",
        "ttl_ms": TTL_MS,
    }
    await ws.send(json.dumps({"type": "quote", "seq": 1, "offers": [offer]}))
    for _ in range(5):  # bounded: the welcome, then the ack
        if json.loads(await asyncio.wait_for(ws.recv(), 2))["type"] == "ack":
            return ws
    raise AssertionError("no ack")


async def clears(http: httpx.AsyncClient, key: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    reply = await http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    return reply.status_code


async def gone_within(http: httpx.AsyncClient, key: str, start: float, limit_s: float) -> float:
    while await clears(http, key) == 200:
        assert time.monotonic() - start < limit_s, "the vanished bidder's offer still clears"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_frozen_bidder_offers_expire_within_ttl(start_market: MarketFactory) -> None:
    m = await start_market()
    sim = await m.add_sim("unused")  # registers a name; the bidder below uses its own provider
    token = await m.add_provider("frozen", sim.base_url)
    key = await m.add_key("alice")
    ws = await quote(m, token, "frozen")  # no heartbeat after this: the bidder is frozen
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=m.url, timeout=10) as http:
        assert await clears(http, key) == 200
        took = await gone_within(http, key, start, TTL_MS / 1000 + SWEEP_S + 0.5)
        assert await clears(http, key) == 503
    assert took > 0.5  # it did clear for a while: the ttl, not the disconnect, ended it
    ws.transport.abort()


async def test_dropped_connection_cancels_offers(start_market: MarketFactory) -> None:
    m = await start_market()
    sim = await m.add_sim("unused")
    token = await m.add_provider("dropped", sim.base_url)
    key = await m.add_key("alice")
    ws = await quote(m, token, "dropped")
    async with httpx.AsyncClient(base_url=m.url, timeout=10) as http:
        for _ in range(50):  # bounded: until the replica has the offer
            if await clears(http, key) == 200:
                break
            await asyncio.sleep(0.02)
        ws.transport.abort()  # TCP gone, no close frame
        await gone_within(http, key, time.monotonic(), TTL_MS / 1000)
