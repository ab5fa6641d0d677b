"""Access: tokens act for their own provider only, admin needs its token, no secret leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from auction.reliability_bench import MODEL
from bidders.config import ws_url
from bidders.pricing import StaticPrices
from bidders.runtime import Bidder, OfferPlan
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from clearing.money import PriceMicros
from tests.e2e.conftest import ADMIN_TOKEN, MarketFactory, settings_for
from tests.reliability.conftest import admin_setup, processes

UPSTREAM_KEY = "sk-upstream-d41d8cd98f00b204e980"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


class Everything(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("websockets.client"):
            return  # the test's own WebSocket clients, which do send the tokens
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.lines.append(f"{record.name} {text}")


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "httpx", "auction"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


async def test_no_secret_in_logs_records_feed_or_errors(
    start_market: MarketFactory, all_logs: Everything
) -> None:
    m = await start_market()
    sim = SimulatedProvider("openai", SimConfig(api_key=UPSTREAM_KEY))
    await sim.start()
    m.sims.append(sim)
    token = await m.add_provider("acme", sim.base_url, api_key=UPSTREAM_KEY)
    key = await m.add_key("alice")
    plan = OfferPlan("o1", {"model": MODEL, "capacity": {"concurrency": 4}},
                     StaticPrices(PriceMicros(500_000), PriceMicros(1_000_000)))  # fmt: skip
    bidder = Bidder(ws_url(m.url), token, "acme", [plan], rng=random.Random(1))
    task = asyncio.create_task(bidder.run())
    seen: list[str] = []
    auth = {"authorization": f"Bearer {key}"}
    feed = await connect(m.url.replace("http", "ws") + "/v1/feed", additional_headers=auth)
    await feed.send(
        json.dumps({"type": "subscribe", "channels": ["trades", "book"], "models": [MODEL]})
    )
    async with httpx.AsyncClient(base_url=m.url, timeout=10) as http:
        for _ in range(100):  # bounded: until the bidder's offer clears
            reply = await http.post("/v1/chat/completions", json=BODY, headers=auth)
            seen.append(reply.text)
            if reply.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert reply.status_code == 200
        sim.faults.add("server_error", 1)  # a failed attempt, and its log lines
        sim.faults.add("rate_limit", 1)
        reply = await http.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=auth)
        seen.append(reply.text)
        clearing = reply.headers.get("x-auction-clearing-id")
        seen.append((await http.get(f"/v1/clearings/{clearing}", headers=auth)).text)
        wrong = {"authorization": f"Bearer {key}x"}
        seen.append((await http.post("/v1/chat/completions", json=BODY, headers=wrong)).text)
        seen.append((await http.get("/v1/admin/providers", headers=auth)).text)
        seen.append((await m.admin.get("/v1/admin/providers")).text)
        seen.append((await m.admin.get("/v1/admin/keys")).text)
        bad = await http.post("/v1/chat/completions", content=b"{" + key.encode(), headers=auth)
        seen.append(bad.text)
    for _ in range(20):  # bounded: the trade reaches the feed
        try:
            seen.append(str(await asyncio.wait_for(feed.recv(), 0.5)))
        except TimeoutError:
            break
    assert any('"trade' in s for s in seen), "the feed carried no trade"
    await feed.close()
    bidder.stop()
    await asyncio.wait_for(task, 5)
    wire = "\n".join(seen)
    logs = "\n".join(all_logs.lines)
    assert "provider registered: acme" in logs  # the capture did see the app's logs
    for secret in (key, token, UPSTREAM_KEY, ADMIN_TOKEN):
        assert secret not in logs, f"a secret is in the logs: {secret[:6]}..."
        assert secret not in wire, f"a secret is in an answer, record or feed: {secret[:6]}..."
        assert secret[8:] not in logs + wire  # nor its tail


async def test_a_bidder_token_quotes_for_its_own_provider_only(start_market: MarketFactory) -> None:
    m = await start_market()
    sim = await m.add_sim("other")
    token = await m.add_provider("acme", sim.base_url)
    ws = await connect(ws_url(m.url), additional_headers={"authorization": f"Bearer {token}"})
    await ws.send(json.dumps({"type": "hello", "provider": "other", "protocol": 1, "agent": "x"}))
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(5):  # bounded: the error, then the close
            await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
    assert m.market.bidder_hub.session_count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys"), ("GET", "/v1/admin/providers"),
     ("POST", "/v1/admin/providers"), ("DELETE", "/v1/admin/providers/acme"),
     ("POST", "/v1/admin/keys/alice/revoke"), ("POST", "/v1/admin/keys/alice/budget")],
)  # fmt: skip
async def test_admin_refuses_without_the_admin_token(
    start_market: MarketFactory, method: str, path: str
) -> None:
    m = await start_market()
    key = await m.add_key("alice")
    async with httpx.AsyncClient(base_url=m.url, timeout=5) as http:
        for headers in ({}, {"authorization": f"Bearer {key}"}, {"authorization": "Bearer x"}):
            reply = await http.request(method, path, headers=headers, json={"name": "evil"})
            assert reply.status_code == 401, (headers, reply.text)
    assert [k["name"] for k in (await m.admin.get("/v1/admin/keys")).json()["data"]] == ["alice"]


async def test_rate_limit_is_shared_across_server_processes(
    redis_url: str, key_prefix: str, redis_client: object
) -> None:
    settings = settings_for(redis_url, key_prefix, rate_limit_per_minute=6)
    with processes(settings, 2) as servers:
        urls = [url for _, url in servers]
        _, api = await admin_setup(urls[0], {}, {"alice": "1"})
        auth = {"authorization": f"Bearer {api['alice']}"}
        async with httpx.AsyncClient(timeout=5, headers=auth) as http:
            codes = [
                (await http.post(urls[n % 2] + "/v1/chat/completions", json=BODY)).status_code
                for n in range(8)
            ]
            last = await http.post(urls[1] + "/v1/chat/completions", json=BODY)
    assert codes[:6] == [503] * 6  # no offers: refused, but counted
    assert codes[6:] == [429, 429]
    assert last.json()["error"]["code"] == "rate_limited"
