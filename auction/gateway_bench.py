"""The gateway benchmark: what the marketplace adds to a chat request, and how many it serves.

Three processes: a zero-delay simulated OpenAI provider, the marketplace (uvicorn, one worker
on uvloop and httptools), and this one, which drives load with a minimal HTTP/1.1 client (so the
client's own cost stays small). Each figure is measured straight at the provider and through the
marketplace, streaming and not: latency p50/p99 at concurrency 1, and requests per second at
concurrency 64. "Added" is the marketplace's latency minus the provider's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis

from auction.book import Book
from auction.catalogue import default_catalogue
from auction.keys import Keys
from auction.serve import local_process
from auction.settings import Settings
from clearing.money import PriceMicros

MODEL = "llama-3.1-8b-instruct"
ADMIN_TOKEN = "bench-admin-token"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Connection:
    """One keep-alive HTTP/1.1 connection that reads whole bodies (fixed or chunked)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, token: str) -> int:
        """Send one request and read the whole answer; returns the status."""
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {token}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        head_bytes = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head_bytes[9:12])
        headers = head_bytes.decode("latin-1").lower()
        if "transfer-encoding: chunked" in headers:
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
                await self._reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            length = int(headers.split("content-length:")[1].split("\r\n")[0])
            await self._reader.readexactly(length)
        return status

    def close(self) -> None:
        self._writer.close()


@dataclass(frozen=True, slots=True)
class Target:
    port: int
    path: str
    token: str


async def _latency(target: Target, body: bytes, count: int) -> list[float]:
    conn = await Connection.open(target.port)
    samples = []
    try:
        for _ in range(20):  # warm up
            await conn.post(target.path, body, target.token)
        for _ in range(count):
            t0 = time.perf_counter()
            status = await conn.post(target.path, body, target.token)
            samples.append(time.perf_counter() - t0)
            assert status == 200, status
    finally:
        conn.close()
    return samples


async def _throughput(target: Target, body: bytes, concurrency: int, seconds: float) -> float:
    conns = [await Connection.open(target.port) for _ in range(concurrency)]
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(conn: Connection) -> None:
        nonlocal done
        await conn.post(target.path, body, target.token)  # warm up the connection
        while time.perf_counter() < stop:
            status = await conn.post(target.path, body, target.token)
            assert status == 200, status
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return done / (time.perf_counter() - started)


def _quantile_ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):  # bounded: 30 s
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url, timeout=1)).status_code < 500:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _setup(market_url: str, sim_port: int, client: aioredis.Redis, prefix: str) -> str:
    """Register the provider, post its offer, issue a key; returns the key."""
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=market_url, headers=headers) as http:
        base_url = f"http://127.0.0.1:{sim_port}/v1"
        reply = await http.post(
            "/v1/admin/providers", json={"name": "sim", "api": "openai", "base_url": base_url}
        )
        reply.raise_for_status()
        reply = await http.post("/v1/admin/keys", json={"name": "bench", "budget_usd": "1000000"})
        reply.raise_for_status()
        key: str = reply.json()["api_key"]
        offer = default_catalogue()[MODEL].offer(
            "sim",
            "fast",
            PriceMicros(50_000),
            PriceMicros(80_000),
            PriceMicros(50_000),
            concurrency=1_000_000,
            ttl_ms=3_600_000,
        )
        await Book(client, Keys(prefix)).upsert("bench-session", [offer])
        for _ in range(200):  # bounded: the server's replica follows within milliseconds
            models = await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            if models.json()["data"]:
                return key
            await asyncio.sleep(0.05)
    raise RuntimeError("the marketplace never saw the benchmark offer")


async def bench_gateway(redis_url: str, prefix: str, quick: bool) -> dict[str, object]:
    """Latency added at concurrency 1 and throughput at 64, direct vs through the marketplace."""
    sim_port, market_port = _free_port(), _free_port()
    settings = Settings.model_validate(
        {"redis_url": redis_url, "key_prefix": prefix, "admin_token": ADMIN_TOKEN,
         "rate_limit_per_minute": 10**9, "log_level": "warning"}
    )  # fmt: skip
    sim = [sys.executable, "-m", "bidders.simulated", "--api", "openai", "--port", str(sim_port)]
    market, env = local_process(settings, market_port, lean=True)
    count, seconds = (300, 2.0) if quick else (2000, 5.0)
    client = aioredis.Redis.from_url(redis_url)
    results: dict[str, object] = {"concurrency_1_requests": count, "throughput_seconds": seconds}
    try:
        with _process(sim), _process(market, env):
            await _wait_http(f"http://127.0.0.1:{sim_port}/_sim/stats")
            await _wait_http(f"http://127.0.0.1:{market_port}/healthz")
            key = await _setup(f"http://127.0.0.1:{market_port}", sim_port, client, prefix)
            direct = Target(sim_port, "/v1/chat/completions", "sim-key")
            via = Target(market_port, "/v1/chat/completions", key)
            for mode, stream in (("non_streaming", False), ("streaming", True)):
                body = json.dumps({**BODY, "stream": stream}).encode()
                results[mode] = await _measure(direct, via, body, count, seconds)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()
    return results


async def _measure(
    direct: Target, via: Target, body: bytes, count: int, seconds: float
) -> dict[str, object]:
    d = await _latency(direct, body, count)
    m = await _latency(via, body, count)
    return {
        "direct_p50_ms": _quantile_ms(d, 0.5),
        "direct_p99_ms": _quantile_ms(d, 0.99),
        "market_p50_ms": _quantile_ms(m, 0.5),
        "market_p99_ms": _quantile_ms(m, 0.99),
        "added_p50_ms": round(_quantile_ms(m, 0.5) - _quantile_ms(d, 0.5), 3),
        "added_p99_ms": round(_quantile_ms(m, 0.99) - _quantile_ms(d, 0.99), 3),
        "direct_rps_c64": round(await _throughput(direct, body, 64, seconds)),
        "market_rps_c64": round(await _throughput(via, body, 64, seconds)),
    }


if __name__ == "__main__":  # a quick look without the `auction bench` wiring
    import uuid

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    quick_run = "--quick" in sys.argv
    report = asyncio.run(bench_gateway(url, f"bench-{uuid.uuid4().hex[:8]}", quick_run))
    print(json.dumps(report, indent=2))
