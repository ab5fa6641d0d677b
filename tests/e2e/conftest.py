"""End-to-end fixtures: the marketplace on a real socket, simulated providers, offers, keys.

The server is uvicorn running `create_app` in the test's own event loop on 127.0.0.1 (so the
test can reach into its Market, e.g. to wait for the replica); clients are the official OpenAI
SDK pointed at it. Offers go into the book directly with `Book.upsert` under a test session id
(the bidder WebSocket is tested elsewhere). Providers and keys go through the admin HTTP API.

The price-feed tests share three fixtures here (`server`, `book`, `api_key`), built on
`feed_kit`'s helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from openai import AsyncOpenAI

from auction.app import create_app
from auction.book import Book
from auction.feed import FeedLimits
from auction.keys import Keys
from auction.market import Market
from auction.serve import local_process
from auction.settings import Settings
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from clearing.money import parse_price
from clearing.types import ApiName, Offer
from tests.e2e.feed_kit import Server, create_api_key, feed_server

ADMIN_TOKEN = "test-admin-token"
SESSION = "test-session"


def make_offer(
    market: Market,
    provider: str,
    offer_id: str,
    model: str = "llama-3.1-70b-instruct",
    prices: tuple[str, str] = ("0.50", "1.00"),
    *,
    concurrency: int = 16,
    **fields: object,
) -> Offer:
    """An offer with the catalogue's facts for `model`; `fields` override any Offer field."""
    input_price, output_price = parse_price(prices[0]), parse_price(prices[1])
    offer = market.catalogue[model].offer(
        provider, offer_id, input_price, output_price, input_price,
        concurrency=concurrency, ttl_ms=120_000,
    )  # fmt: skip
    return dataclasses.replace(offer, **fields)  # type: ignore[arg-type]  # test-only overrides


@dataclass
class Marketplace:
    """One running marketplace, with helpers to set it up through its real interfaces."""

    url: str
    market: Market
    admin: httpx.AsyncClient
    sims: list[SimulatedProvider] = field(default_factory=list)
    clients: list[AsyncOpenAI] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    async def add_provider(
        self, name: str, base_url: str, api: ApiName = "openai", api_key: str | None = None
    ) -> str:
        body: dict[str, object] = {"name": name, "api": api, "base_url": base_url}
        if api_key is not None:
            body["api_key"] = api_key
        reply = await self.admin.post("/v1/admin/providers", json=body)
        assert reply.status_code == 200, reply.text
        token: str = reply.json()["bidder_token"]
        return token

    async def add_sim(
        self, name: str, config: SimConfig | None = None, api: ApiName = "openai"
    ) -> SimulatedProvider:
        """Start a simulated provider and register it under `name`."""
        sim = SimulatedProvider(api, config or SimConfig())
        await sim.start()
        self.sims.append(sim)
        await self.add_provider(name, sim.base_url, api)
        return sim

    async def add_key(self, name: str, budget_usd: str = "10", period: str = "total") -> str:
        reply = await self.admin.post(
            "/v1/admin/keys", json={"name": name, "budget_usd": budget_usd, "period": period}
        )
        assert reply.status_code == 200, reply.text
        key: str = reply.json()["api_key"]
        return key

    async def post(self, *offers: Offer) -> None:
        """Put offers in the book and wait until this server's replica has them."""
        await self.market.book.upsert(SESSION, list(offers))
        await self.market.replica.sync()

    def offer(self, provider: str, offer_id: str, *args: object, **kw: object) -> Offer:
        return make_offer(self.market, provider, offer_id, *args, **kw)  # type: ignore[arg-type]

    def client(self, api_key: str, **kw: object) -> AsyncOpenAI:
        """An OpenAI SDK client for this marketplace (closed when the marketplace stops)."""
        client = AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kw)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    async def settled(self) -> None:
        """Wait for this server's settlements in flight (they run just after the answers)."""
        await self.market.broker.pending.all_settled()

    async def in_flight(self, offer: Offer) -> int:
        await self.settled()
        return await self.market.book.in_flight(offer.model, offer.ref)

    async def account(self, api_key: str) -> dict[str, object]:
        reply = await self.admin.get("/v1/account", headers={"authorization": f"Bearer {api_key}"})
        assert reply.status_code == 200, reply.text
        data: dict[str, object] = reply.json()
        return data


def settings_for(redis_url: str, key_prefix: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "admin_token": ADMIN_TOKEN,
        "rate_limit_per_minute": 100_000,
        "default_timeout_ms": 10_000,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@contextlib.asynccontextmanager
async def running_market(settings: Settings) -> AsyncIterator[Marketplace]:
    """The marketplace served by uvicorn in this event loop until the block ends."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=3,  # a connection left open by a test cannot hang teardown
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # bounded: 5 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the marketplace did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    admin = httpx.AsyncClient(
        base_url=url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
    handle = Marketplace(url, app.state.market, admin)
    try:
        yield handle
    finally:
        await admin.aclose()
        for client in handle.clients:
            await client.close()
        for sim in handle.sims:
            await sim.stop()
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            for t in asyncio.all_tasks():
                t.print_stack(limit=6)
            raise


MarketFactory = Callable[..., Awaitable[Marketplace]]


@pytest.fixture
async def start_market(
    redis_url: str, key_prefix: str, redis_client: object
) -> AsyncIterator[MarketFactory]:
    """Start a marketplace with settings overrides: `await start_market(failover_depth=2)`."""
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: object) -> Marketplace:
        settings = settings_for(redis_url, key_prefix, **overrides)
        return await stack.enter_async_context(running_market(settings))

    async with stack:
        yield start


@pytest.fixture
async def market(start_market: MarketFactory) -> Marketplace:
    """A marketplace with the default test settings."""
    return await start_market()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server_processes(settings: Settings, count: int) -> Iterator[list[str]]:
    """`count` marketplace processes (uvicorn, one worker each) on one Redis and prefix.

    Yields their base URLs once every one answers /readyz. Blocking: call it from a thread in
    async tests.
    """
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            command, env = local_process(settings, port)
            procs.append(subprocess.Popen(command, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(procs, urls, strict=True):
            _wait_ready(proc, url)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "a marketplace process exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("a marketplace process did not become ready")


# -- the price feed -------------------------------------------------------------------------------
@pytest.fixture
async def api_key(redis_client: aioredis.Redis, key_prefix: str) -> str:
    """A client API key for a feed subscriber."""
    return await create_api_key(redis_client, key_prefix, "feed-watcher")


@pytest.fixture
def book(redis_client: aioredis.Redis, key_prefix: str) -> Book:
    """The order book under the test's prefix, changed directly (no bidder)."""
    return Book(redis_client, Keys(key_prefix))


@pytest.fixture
async def server(redis_url: str, key_prefix: str) -> AsyncIterator[Server]:
    """A feed server (heartbeats every 500 ms) on the test's Redis and prefix."""
    async with feed_server(redis_url, key_prefix, FeedLimits(heartbeat_ms=500)) as running:
        yield running
