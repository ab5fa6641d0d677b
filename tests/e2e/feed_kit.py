"""Helpers for the price-feed end-to-end tests: feed servers on real sockets, offers, trades and
reading the feed. The fixtures on top of them (`server`, `book`, `api_key`) are in conftest.py."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage
from websockets.asyncio.client import ClientConnection, connect

from auction.accounts import Accounts
from auction.feed import FeedLimits
from auction.feed_client import FeedClient
from auction.feed_hub import FeedHub, Trade
from auction.keys import Keys
from auction.replica import BookReplica
from auction.routes.feed import feed_router
from clearing.money import Nanos, PriceMicros, format_price
from clearing.types import Offer

MODELS = ("gpt-4o", "llama-3.1-8b-instruct")
Message = dict[str, Any]


@dataclass
class Server:
    """One server process's feed: its own Redis client, replica, hub and uvicorn on a port."""

    url: str
    port: int
    hub: FeedHub
    replica: BookReplica


@asynccontextmanager
async def feed_server(
    redis_url: str,
    prefix: str,
    limits: FeedLimits,
    *,
    send_buffer: int | None = None,
    hide_transport: bool = False,
) -> AsyncIterator[Server]:
    """A uvicorn server with the feed; `send_buffer` pins its sockets' kernel send buffers.

    `hide_transport` wraps uvicorn's ASGI callables, as another server's would look: the hub
    then sends through ASGI.
    """
    redis = aioredis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    replica = BookReplica(redis, keys, MODELS, block_ms=200)
    hub = FeedHub(redis, keys, replica, MODELS, limits=limits, tick_s=0.05, close_timeout_s=5)
    hub.trade_block_ms = 200

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await replica.start()
        await hub.start()
        yield
        await hub.stop()
        # Bounded: cancelling the replica inside its blocking XREAD has been seen to hang (in
        # redis-py, under load); a hang there is the replica's to fix, not this feed test's.
        await asyncio.wait([asyncio.create_task(replica.stop())], timeout=3)

    app = FastAPI(lifespan=lifespan)
    app.include_router(feed_router(hub, Accounts(redis, keys).authenticate))
    asgi: ASGIApp = HideTransport(app) if hide_transport else app
    config = uvicorn.Config(asgi, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    listener = socket.socket()
    if send_buffer is not None:  # accepted sockets inherit it (and lose send-buffer autotuning)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield Server(f"ws://127.0.0.1:{port}/v1/feed", port, hub, replica)
    finally:
        server.should_exit = True
        await task
        await redis.aclose()


class HideTransport:
    """ASGI middleware passing plain functions for `receive` and `send`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def plain_receive() -> AsgiMessage:
            return await receive()

        async def plain_send(message: AsgiMessage) -> None:
            await send(message)

        await self.app(scope, plain_receive, plain_send)


async def create_api_key(redis: aioredis.Redis, prefix: str, name: str) -> str:
    """A client API key (budget $1) for a feed subscriber."""
    _, token = await Accounts(redis, Keys(prefix)).create_key(name, Nanos(10**9), "total")
    return token


def offer(offer_id: str = "o1", price: int = 500_000, model: str = "gpt-4o", **kw: Any) -> Offer:
    fields: dict[str, Any] = {
        "provider": "acme", "offer_id": offer_id, "model": model,
        "input_price": PriceMicros(price), "output_price": PriceMicros(price * 2),
        "cached_input_price": PriceMicros(price), "concurrency": 4, "quality": 88,
        "context_window": 128_000, "max_output_tokens": 4096,
        "features": frozenset({"tools"}), "seq": 0, "ttl_ms": 60_000,
    }  # fmt: skip
    fields.update(kw)
    return Offer(**fields)


def trade(model: str = "gpt-4o", ts: int = 1) -> Trade:
    return Trade(model, "acme", "o1", PriceMicros(590_000), PriceMicros(790_000), 812, 240,
                 Nanos(670_000), ts)  # fmt: skip


async def open_feed(url: str, key: str, **kw: Any) -> ClientConnection:
    kw.setdefault("compression", None)
    return await connect(url, additional_headers={"Authorization": f"Bearer {key}"}, **kw)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Message:
    async with asyncio.timeout(timeout):
        message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def recv_until(
    ws: ClientConnection, want: Callable[[Message], bool], *, heartbeats: bool = False
) -> list[Message]:
    """Messages up to and including the first that `want` accepts."""
    out: list[Message] = []
    async with asyncio.timeout(10):
        while True:
            message = await recv(ws)
            if heartbeats or message["type"] != "heartbeat":
                out.append(message)
            if want(message):
                return out


async def subscribe(ws: ClientConnection, channels: list[str], models: list[str]) -> Message:
    """Subscribe and return the last snapshot (or the ack for trades only)."""
    await ws.send(json.dumps({"type": "subscribe", "channels": channels, "models": models}))
    count = len(models) if "book" in channels else 0
    messages = await recv_until(
        ws, lambda m: (m["type"] == "snapshot" and m["model"] == models[-1]) or count == 0
    )
    return messages[-1]


def local_prices(client: FeedClient) -> dict[str, str]:
    return {r: o["input_usd_per_mtok"] for r, o in client.books["gpt-4o"].offers.items()}


def replica_prices(server: Server) -> dict[str, str]:
    return {o.ref: format_price(o.input_price) for o in server.replica.index.offers("gpt-4o")}
