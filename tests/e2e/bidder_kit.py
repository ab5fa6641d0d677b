"""Helpers for the bidder WebSocket end-to-end tests: raw bidder sockets, protocol messages,
polling, provider registration and marketplace processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from auction.book import Book
from auction.serve import local_process
from auction.settings import Settings
from clearing.types import Offer
from tests.e2e.conftest import (
    ADMIN_TOKEN,
    Marketplace,
)

MODEL = "llama-3.1-70b-instruct"  # catalogue: context 131072, output 8192, tools/json/streaming
Json = dict[str, Any]
NO_SIM = "http://127.0.0.1:9/v1"  # registered but never called


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/v1/bidders/ws"


@contextlib.asynccontextmanager
async def bidder(
    base: str, token: str, provider: str | None = None
) -> AsyncIterator[ClientConnection]:
    """A raw bidder socket; with `provider`, already past hello/welcome."""
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        ws_url(base), additional_headers=headers, open_timeout=5, close_timeout=2
    ) as ws:
        if provider is not None:
            await hello(ws, provider)
        yield ws


async def send(ws: ClientConnection, message: Json | str | bytes) -> None:
    await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Json:
    async with asyncio.timeout(timeout):
        message: Json = json.loads(await ws.recv())
    return message


async def ask(ws: ClientConnection, message: Json | str | bytes) -> Json:
    await send(ws, message)
    return await recv(ws)


async def hello(ws: ClientConnection, provider: str) -> Json:
    welcome = await ask(ws, {"type": "hello", "provider": provider, "protocol": 1, "agent": "t/1"})
    assert welcome["type"] == "welcome", welcome
    return welcome


async def quote(ws: ClientConnection, seq: object, *offers: object) -> Json:
    return await ask(ws, {"type": "quote", "seq": seq, "offers": list(offers)})


async def silent(ws: ClientConnection, seconds: float = 0.2) -> None:
    """Nothing arrives for `seconds`."""
    with pytest.raises(TimeoutError):
        await recv(ws, seconds)


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes the socket; its close code."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


def offer(offer_id: str, price_in: str = "0.50", price_out: str = "1.00", **fields: Any) -> Json:
    body: Json = {
        "offer_id": offer_id,
        "model": MODEL,
        "input_usd_per_mtok": price_in,
        "output_usd_per_mtok": price_out,
        "capacity": {"concurrency": 8},
    }
    body.update(fields)
    return body


async def book_of(book: Book, model: str = MODEL) -> dict[str, Offer]:
    """The live offers of `model` in Redis, by ref (with their seq: time priority)."""
    snapshot = await book.snapshot(model)
    return {o.ref: o for o, _ in snapshot.entries}


async def until(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.05) -> None:
    """Poll an async `check()` until it is truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(every)


async def until_book(book: Book, refs: set[str], model: str = MODEL) -> None:
    """Wait until the live offers of `model` are `refs` (a close's cancel runs server-side)."""

    async def there() -> bool:
        return set(await book_of(book, model)) == refs

    await until(there)


async def token_for(market: Marketplace, name: str = "acme", base_url: str = NO_SIM) -> str:
    return await market.add_provider(name, base_url)


async def completion(base: str, key: str, **body: Any) -> httpx.Response:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    request.update(body)
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            base + "/v1/chat/completions",
            json=request,
            headers={"authorization": f"Bearer {key}"},
        )


def assert_fill(fill: Json, reply: httpx.Response, offer_id: str) -> None:
    answer = reply.json()
    assert fill["type"] == "fill" and fill["offer_id"] == offer_id
    assert fill["clearing_id"] == reply.headers["x-auction-clearing-id"]
    assert fill["model"] == MODEL
    assert fill["input_tokens"] == answer["usage"]["prompt_tokens"] > 0
    assert fill["output_tokens"] == answer["usage"]["completion_tokens"] > 0
    assert Decimal(fill["cost_usd"]) == Decimal(reply.headers["x-auction-cost-usd"]) > 0
    assert abs(fill["ts"] - time.time() * 1000) < 60_000


@contextlib.asynccontextmanager
async def admin_of(base: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        yield http


async def register(base: str, name: str, base_url: str = NO_SIM) -> str:
    async with admin_of(base) as http:
        reply = await http.post(
            "/v1/admin/providers", json={"name": name, "api": "openai", "base_url": base_url}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["bidder_token"])


async def wins_at(base: str, key: str, provider: str, offer_id: str) -> bool:
    """Whether the process at `base` would clear a request for MODEL against this offer."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
            "auction": {"providers": {"only": [provider]}}}  # fmt: skip
    async with httpx.AsyncClient(timeout=5) as http:
        reply = await http.post(
            base + "/v1/quote", json=body, headers={"authorization": f"Bearer {key}"}
        )
    winner = reply.json()["winner"]
    return winner is not None and winner["offer_id"] == offer_id


def spawn(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    """One marketplace process on `port`, started as `server_processes` starts them."""
    command, env = local_process(settings, port)
    return subprocess.Popen(command, env=env)


async def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it lingers."""
    proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait)
