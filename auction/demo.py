"""`auction demo`: a whole market on one machine, with a live view, until Ctrl-C.

Starts the embedded Redis (or uses REDIS_URL), the marketplace, simulated providers speaking the
OpenAI, Anthropic and Gemini wire formats, a bidder for each with its own pricing strategy, a
client key, a little client traffic so trades happen, and a live view fed by the price feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import uvicorn
from pydantic import SecretStr

from auction.app import create_app
from auction.demo_market import DEMO_PROVIDERS, DemoProvider
from auction.demo_view import Tally, render
from auction.feed_client import FeedClient
from auction.settings import Settings
from bidders.runtime import Bidder, OfferPlan
from bidders.simulated.server import SimulatedProvider
from clearing.money import format_usd

log = logging.getLogger("auction.demo")
SIM_KEY = "sim-demo-upstream-key"
PROMPTS = (
    "Summarize the plot of Hamlet in two sentences.",
    "Write a haiku about spot markets.",
    "Explain what a second-price auction is to a ten-year-old.",
    "List three uses of Redis streams.",
)


@asynccontextmanager
async def running_server(app: object, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Run a uvicorn server in this event loop for the duration of the block."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)  # type: ignore[arg-type]  # an ASGI app
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # the demo owns Ctrl-C
    task = asyncio.create_task(server.serve(), name="marketplace")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the marketplace did not start")
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)


async def register(admin: httpx.AsyncClient, spec: DemoProvider, base_url: str) -> str:
    """Register a simulated provider through the admin API; returns its bidder token."""
    await admin.delete(f"/v1/admin/providers/{spec.name}")  # a previous demo's registration
    reply = await admin.post(
        "/v1/admin/providers",
        json={"name": spec.name, "api": spec.api, "base_url": base_url, "api_key": SIM_KEY},
    )
    reply.raise_for_status()
    return str(reply.json()["bidder_token"])


async def create_client_key(admin: httpx.AsyncClient) -> str:
    name = f"demo-{secrets.token_hex(3)}"
    reply = await admin.post(
        "/v1/admin/keys", json={"name": name, "budget_usd": "5.00", "period": "day"}
    )
    reply.raise_for_status()
    return str(reply.json()["api_key"])


async def traffic(base: str, key: str, rate: float, tally: Tally, stop: asyncio.Event) -> None:
    """Send client requests at about `rate` per second, varied, until stopped."""
    rng = random.Random(11)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            task = asyncio.create_task(_one_request(client, rng, tally))
            pending.add(task)
            task.add_done_callback(pending.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=rng.expovariate(rate))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


async def _one_request(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    body: dict[str, object] = {
        "model": rng.choice(["auto", "auto", "llama-3.1-70b-instruct", "gpt-4o-mini"]),
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": rng.choice([64, 128, 256]),
    }
    if body["model"] == "auto":
        body["auction"] = {"min_quality": rng.choice([55, 70, 80]), "max_ttft_ms": 800}
    tally.sent += 1
    try:
        reply = await client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError:
        tally.failed += 1
        return
    tally.statuses[reply.status_code] = tally.statuses.get(reply.status_code, 0) + 1
    if reply.status_code == 200:
        tally.ok += 1
    else:
        tally.failed += 1


async def follow_trades(feed: FeedClient, tally: Tally) -> None:
    async for trade in feed.trades():
        tally.trades.append(trade)
        tally.trade_count += 1
        tally.traded_nanos += trade.cost


def banner(base: str, key: str) -> str:
    return (
        f"LLM inference auction — demo market at {base}/v1\n"
        f"client API key: {key}\n\n"
        f"curl {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' \\\n"
        f'  -d \'{{"model": "auto", "messages": [{{"role": "user", "content": "Hi"}}],'
        f' "auction": {{"min_quality": 70}}}}\'\n\n'
        f"from openai import OpenAI\n"
        f"client = OpenAI(base_url='{base}/v1', api_key='{key}')\n"
        f"r = client.chat.completions.create(model='auto', "
        f"messages=[{{'role': 'user', 'content': 'Hi'}}], extra_body={{'auction': "
        f"{{'max_cost_usd': '0.01'}}}})\n"
    )


async def run_demo(
    settings: Settings, *, rate: float, live: bool, duration_s: float | None
) -> Tally:
    """Run the whole market until Ctrl-C (or `duration_s`), then shut it all down.

    The key prefix is "demo" unless the settings name one of their own. Returns what the demo's
    own traffic saw.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin_token = secrets.token_urlsafe(24)
    default_prefix = Settings.model_fields["key_prefix"].default
    prefix = "demo" if settings.key_prefix == default_prefix else settings.key_prefix
    settings = settings.model_copy(
        update={"admin_token": SecretStr(admin_token), "key_prefix": prefix}
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    base = f"http://{settings.host}:{settings.port}"
    tally = Tally()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            running_server(create_app(settings), settings.host, settings.port)
        )
        admin = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin_token}"})
        )
        bidders: list[Bidder] = []
        for n, spec in enumerate(DEMO_PROVIDERS):
            sim = await stack.enter_async_context(SimulatedProvider(spec.api, spec.sim))
            token = await register(admin, spec, sim.base_url)
            plans = [OfferPlan(o.offer_id, o.fields(), o.strategy(seed=n * 10 + i))
                     for i, o in enumerate(spec.offers)]  # fmt: skip
            bidders.append(
                Bidder(base.replace("http", "ws", 1) + "/v1/bidders/ws", token, spec.name, plans)
            )
        key = await create_client_key(admin)
        tasks = [asyncio.create_task(b.run(), name=f"bidder-{b.provider}") for b in bidders]
        feed = await stack.enter_async_context(
            FeedClient(base.replace("http", "ws", 1) + "/v1/feed", key)
        )
        tasks.append(asyncio.create_task(follow_trades(feed, tally)))
        offers = sum(len(spec.offers) for spec in DEMO_PROVIDERS)
        with contextlib.suppress(TimeoutError):  # traffic before the book fills would get 503s
            await feed.wait_until(
                lambda f: sum(len(b.offers) for b in f.books.values()) >= offers, 10
            )
        if rate > 0:
            tasks.append(asyncio.create_task(traffic(base, key, rate, tally, stop)))
        header = banner(base, key)
        print(header, flush=True)
        started = time.monotonic()
        deadline = None if duration_s is None else started + duration_s
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if live:
                sys.stdout.write(render(feed, tally, header, started) + "\n")
                sys.stdout.flush()
            else:
                log.info("trades %d ($%s), traffic %d ok / %d failed", tally.trade_count,
                         format_usd(tally.traded_nanos), tally.ok, tally.failed)  # fmt: skip
            period = 1.0 if live else 5.0
            if deadline is not None:
                period = max(0.0, min(period, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
        print("\nstopping…", flush=True)
        stop.set()
        for bidder in bidders:
            bidder.stop()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5)  # a task slow to cancel must not hold up Ctrl-C
    print(f"stopped: {tally.trade_count} trades, {tally.ok} demo requests served.")
    return tally
