"""The ingest benchmark: offer updates per second from 10 bidders, and quote-to-clearable latency.

The marketplace runs as in production (one uvicorn process on uvloop and httptools, started with
`auction.gateway_bench`'s helpers); the bidders are raw WebSocket clients in this process. Each
of 10 bidders (one provider each) keeps one quote of 50 offers (10 on each of 5 models) in
flight: it sends the quote, waits for the `ack`, and sends the next at once, every offer
re-priced each time. Throughput is the offers acknowledged (that is, in the book) per second
over a fixed window after a warm-up.

Quote-to-clearable: an 11th bidder quotes a lone offer on a model of its own, each quote a new
best price, while a price-feed subscriber on that model notes when the update arrives. The feed
sends a book update right after the server's book replica applies it, and the replica is what
that process clears against, so the update's arrival is when the process would clear against
the new price (plus one local WebSocket write). Measured with the bidders idle, flat out (where
the probe's quote queues behind the ten in flight), paced at the target of 20,000 offer updates/s,
and paced at half of what flat out reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from auction.gateway_bench import _free_port, _process, _quantile_ms, _wait_http
from auction.serve import local_process
from auction.settings import Settings
from bidders.messages import WS_PATH
from clearing.money import PriceMicros, format_price

ADMIN_TOKEN = "bench-admin-token"
BIDDERS = 10
LOAD_MODELS = (
    "llama-3.1-70b-instruct",
    "llama-3.1-8b-instruct",
    "gpt-4o-mini",
    "mistral-small",
    "deepseek-v3",
)
OFFERS_PER_MODEL = 10
OFFERS_PER_QUOTE = OFFERS_PER_MODEL * len(LOAD_MODELS)
TARGET_UPDATES_PER_S = 20_000  # issue #3's target rate, at which the latency target applies
PROBE_MODEL = "gpt-4o"
PROBE_GAP_S = 0.02
PROBE_TIMEOUT_S = 5.0
ACK_TIMEOUT_S = 30.0


@dataclass
class Meter:
    """Offers acknowledged while the window is open."""

    open: bool = False
    offers: int = 0
    quotes: int = 0
    rejected: int = 0
    elapsed: float = 0.0
    latency: dict[str, object] = field(default_factory=dict)  # the probe's, meanwhile


@dataclass
class Probe:
    """Quote-to-clearable samples: seconds from sending a quote to its feed update."""

    waiting: str | None = None  # the price of the quote in flight
    sent: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    samples: list[float] = field(default_factory=list)
    to_book_ms: list[int] = field(default_factory=list)  # send -> the book's change (Redis time)
    lost: int = 0
    quotes: int = 0
    epoch_offset: float = field(default_factory=lambda: time.time() - time.perf_counter())

    def reset(self) -> None:
        self.samples, self.to_book_ms, self.lost = [], [], 0


async def bench_ingest(redis_url: str, prefix: str, quick: bool) -> dict[str, object]:
    """Offer updates/s from 10 concurrent bidders, and quote-to-clearable latency p50/p99."""
    port = _free_port()
    settings = Settings.model_validate(
        {"redis_url": redis_url, "key_prefix": prefix, "admin_token": ADMIN_TOKEN,
         "log_level": "warning", "max_messages_per_second": 100_000}
    )  # fmt: skip
    market, env = local_process(settings, port, lean=True)
    warmup_s, window_s, idle_s = (1.0, 3.0, 1.0) if quick else (2.0, 10.0, 3.0)
    base = f"http://127.0.0.1:{port}"
    try:
        with _process(market, env):
            await _wait_http(base + "/healthz")
            return await _run(base, warmup_s, window_s, idle_s)
    finally:
        await _drop_prefix(redis_url, prefix)


async def _run(base: str, warmup_s: float, window_s: float, idle_s: float) -> dict[str, object]:
    tokens, key = await _setup(base)
    ws_base = base.replace("http", "ws", 1)
    async with _probe(ws_base, tokens["probe"], key) as (probe_ws, probe):
        await _probe_quotes(probe_ws, probe, idle_s)
        idle = _latency(probe)
        full = await _load_phase(ws_base, tokens, probe_ws, probe, warmup_s, window_s, None)
        target_rate = TARGET_UPDATES_PER_S / OFFERS_PER_QUOTE
        target = await _load_phase(
            ws_base, tokens, probe_ws, probe, warmup_s, window_s, target_rate
        )
        half_rate = max(1.0, full.quotes / full.elapsed / 2)
        half = await _load_phase(ws_base, tokens, probe_ws, probe, warmup_s, idle_s, half_rate)
    return {
        "bidders": BIDDERS,
        "offers_per_quote": OFFERS_PER_QUOTE,
        "window_s": window_s,
        "offer_updates_per_s": round(full.offers / full.elapsed),
        "quotes_per_s": round(full.quotes / full.elapsed),
        "offers_rejected": full.rejected,
        "clearable_idle": idle,
        "clearable_at_full_load": full.latency,
        "clearable_at_target_load": {
            "offer_updates_per_s": round(target.offers / target.elapsed),
            **target.latency,
        },
        "clearable_at_half_load": {
            "offer_updates_per_s": round(half.offers / half.elapsed),
            **half.latency,
        },
    }


async def _load_phase(
    ws_base: str,
    tokens: dict[str, str],
    probe_ws: ClientConnection,
    probe: Probe,
    warmup_s: float,
    window_s: float,
    quotes_per_s: float | None,
) -> Meter:
    """The 10 bidders quoting flat out (or at `quotes_per_s` in all) while the probe measures."""
    meter, stop = Meter(), asyncio.Event()
    interval = None if quotes_per_s is None else BIDDERS / quotes_per_s
    bidders = [
        asyncio.create_task(_bidder(ws_base, tokens[f"p{i}"], f"p{i}", meter, stop, interval))
        for i in range(BIDDERS)
    ]
    try:
        await asyncio.sleep(warmup_s)
        probe.reset()
        meter.open = True
        started = time.perf_counter()
        await _probe_quotes(probe_ws, probe, window_s)
        meter.open = False
        meter.elapsed = time.perf_counter() - started
        meter.latency = _latency(probe)
    finally:
        stop.set()
        await asyncio.gather(*bidders)
    return meter


def _latency(probe: Probe) -> dict[str, object]:
    if not probe.samples:
        return {"samples": 0, "lost": probe.lost}
    book = sorted(probe.to_book_ms)
    return {
        "p50_ms": _quantile_ms(probe.samples, 0.5),
        "p99_ms": _quantile_ms(probe.samples, 0.99),
        "max_ms": round(max(probe.samples) * 1000, 3),
        "to_book_p50_ms": book[len(book) // 2],
        "to_book_p99_ms": book[min(len(book) - 1, int(len(book) * 0.99))],
        "samples": len(probe.samples),
        "lost": probe.lost,
    }


async def _setup(base: str) -> tuple[dict[str, str], str]:
    """Register the providers (p0..p9 and probe) and issue a client key for the feed."""
    tokens: dict[str, str] = {}
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        for name in [*(f"p{i}" for i in range(BIDDERS)), "probe"]:
            body = {"name": name, "api": "openai", "base_url": "http://127.0.0.1:9/v1"}
            reply = await http.post("/v1/admin/providers", json=body)
            reply.raise_for_status()
            tokens[name] = str(reply.json()["bidder_token"])
        reply = await http.post("/v1/admin/keys", json={"name": "bench", "budget_usd": "1"})
        reply.raise_for_status()
        return tokens, str(reply.json()["api_key"])


async def _hello(ws_base: str, token: str, provider: str) -> ClientConnection:
    ws = await connect(
        ws_base + WS_PATH, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    )
    await ws.send(json.dumps({"type": "hello", "provider": provider, "protocol": 1}))
    welcome = json.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"{provider}: no welcome: {welcome}")
    return ws


def _offers_text(variant: int) -> str:
    """The 50 offers of one quote, as JSON text; the two variants differ in every price."""
    offers = [
        {
            "offer_id": f"{model}-{k}",
            "model": model,
            "input_usd_per_mtok": format_price(PriceMicros(100_000 + 1_000 * k + variant)),
            "output_usd_per_mtok": format_price(PriceMicros(200_000 + 1_000 * k + variant)),
            "capacity": {"concurrency": 64},
            "latency": {"ttft_ms": 300, "output_tokens_per_s": 80},
            "ttl_ms": 60_000,
        }
        for model in LOAD_MODELS
        for k in range(OFFERS_PER_MODEL)
    ]
    return json.dumps(offers, separators=(",", ":"))


async def _bidder(
    ws_base: str,
    token: str,
    provider: str,
    meter: Meter,
    stop: asyncio.Event,
    interval: float | None,
) -> None:
    """Quote, wait for the answer, quote again (re-priced) until stopped.

    With an `interval`, one quote per interval (a late answer delays the next quote).
    """
    bodies = (_offers_text(0), _offers_text(1))
    ws = await _hello(ws_base, token, provider)
    loop = asyncio.get_running_loop()
    next_at = loop.time() + random.uniform(0, interval or 0)
    try:
        seq = 0
        while not stop.is_set():
            if interval is not None:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                next_at += interval
            seq += 1
            await ws.send(f'{{"type":"quote","seq":{seq},"offers":{bodies[seq % 2]}}}')
            async with asyncio.timeout(ACK_TIMEOUT_S):
                reply = json.loads(await ws.recv())
            if reply.get("type") not in ("ack", "reject") or reply.get("seq") != seq:
                raise RuntimeError(f"{provider}: unexpected answer {reply}")
            rejected = len(reply.get("errors", ()))
            if meter.open:
                meter.quotes += 1
                meter.offers += OFFERS_PER_QUOTE - rejected
                meter.rejected += rejected
    finally:
        await ws.close()


@contextlib.asynccontextmanager
async def _probe(
    ws_base: str, token: str, key: str
) -> AsyncIterator[tuple[ClientConnection, Probe]]:
    """The probe bidder's socket, with a feed subscriber on its model timing every update."""
    probe = Probe()
    feed = await connect(
        ws_base + "/v1/feed", additional_headers={"Authorization": f"Bearer {key}"}, max_size=None
    )
    await feed.send(
        json.dumps({"type": "subscribe", "channels": ["book"], "models": [PROBE_MODEL]})
    )
    while json.loads(await feed.recv()).get("type") != "snapshot":
        pass
    ws = await _hello(ws_base, token, "probe")
    tasks = [
        asyncio.create_task(_watch(feed, probe)),
        asyncio.create_task(_drain(ws)),
    ]
    try:
        yield ws, probe
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()
        await feed.close()


async def _watch(feed: ClientConnection, probe: Probe) -> None:
    async for raw in feed:
        arrived = time.perf_counter()
        message = json.loads(raw)
        offer = message.get("offer")
        if message.get("type") != "update" or not isinstance(offer, dict):
            continue
        if probe.waiting is not None and offer.get("input_usd_per_mtok") == probe.waiting:
            probe.waiting = None
            probe.samples.append(arrived - probe.sent)
            sent_ms = int((probe.sent + probe.epoch_offset) * 1000)
            probe.to_book_ms.append(int(message["ts"]) - sent_ms)
            probe.arrived.set()


async def _drain(ws: ClientConnection) -> None:
    async for raw in ws:
        if json.loads(raw).get("type") not in ("ack", "reject"):
            raise RuntimeError(f"probe: unexpected answer {raw!r}")


async def _probe_quotes(ws: ClientConnection, probe: Probe, seconds: float) -> None:
    """For `seconds`: quote the probe offer at a new best (lower) price, wait for its update.

    One quote at a time (a gap of up to PROBE_GAP_S after each update), so a sample measures
    the market's delay, not a queue of the probe's own quotes.
    """
    rng = random.Random(5)
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        probe.quotes += 1
        price = format_price(PriceMicros(5_000_000 - probe.quotes))
        offer = {"offer_id": "best", "model": PROBE_MODEL, "input_usd_per_mtok": price,
                 "output_usd_per_mtok": "10", "capacity": {"concurrency": 8}}  # fmt: skip
        text = json.dumps({"type": "quote", "seq": probe.quotes, "offers": [offer]})
        probe.arrived.clear()
        probe.waiting, probe.sent = price, time.perf_counter()
        await ws.send(text)
        try:
            await asyncio.wait_for(probe.arrived.wait(), PROBE_TIMEOUT_S)
        except TimeoutError:
            probe.waiting = None
            probe.lost += 1
        await asyncio.sleep(rng.uniform(0, PROBE_GAP_S))


async def _drop_prefix(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


if __name__ == "__main__":  # a quick look without the `auction bench` wiring
    import uuid

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    report = asyncio.run(bench_ingest(url, f"bench-{uuid.uuid4().hex[:8]}", "--quick" in sys.argv))
    print(json.dumps(report, indent=2))
