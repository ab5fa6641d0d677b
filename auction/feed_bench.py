"""Feed fan-out benchmark: delay from `Book.upsert` to delivery at many WebSocket subscribers.

The server (replica, hub and the real `/v1/feed` route under uvicorn) runs in a child process, as
in production. The subscribers run in another child process (uvloop) as lean raw-socket WebSocket
clients, so that the figures measure the server rather than a client library: each one only
splits frames and notes the change number out of the update's `upstream_model` ("bench-<k>")
and when it arrived; this process drives the changes and computes the delays. Every change is
to a different offer than the last few, so a delivery is only conflated if the server falls
seconds behind; `delivered` against `expected` shows whether it did. `bench_feed` runs both
protocols: one message per frame (the default) and batched frames (`batch_ms`).

The child processes live in `auction.feed_bench_children`; this module drives the changes and
computes the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.book import Book
from auction.feed_bench_children import MODEL, ServerProcess, SubscriberProcess, subscribe_frame
from auction.keys import Keys
from clearing.money import Nanos, PriceMicros
from clearing.types import Offer

OFFERS = 200  # the bench re-quotes these in turn
BATCH_MS = 50  # the batched run's `batch_ms`


async def bench_feed(redis_url: str, prefix: str, quick: bool) -> dict[str, object]:
    """Fan-out of 100 book changes/s to 1,000 subscribers for 10 s (quick: 100 for 3 s).

    Twice: one message per frame ("default"), then batched frames ("batched", `BATCH_MS`).
    """
    subscribers, seconds = (100, 3) if quick else (1_000, 10)
    figures: dict[str, object] = {}
    for mode, batch_ms in (("default", None), ("batched", BATCH_MS)):
        figures[mode] = await fan_out(
            redis_url,
            f"{prefix}-{mode}",
            subscribers=subscribers,
            rate=100,
            seconds=seconds,
            batch_ms=batch_ms,
        )
    return figures


async def fan_out(
    redis_url: str,
    prefix: str,
    *,
    subscribers: int,
    rate: int,
    seconds: int,
    batch_ms: int | None = None,
) -> dict[str, object]:
    """Run one fan-out measurement; the keys under `prefix` are deleted afterwards.

    Returns p50/p99/max delay in ms from just before `Book.upsert` to the frame's arrival, and
    how many deliveries arrived out of subscribers × changes. `batch_ms` subscribes with batched
    frames.
    """
    redis = aioredis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    book = Book(redis, keys)
    try:
        _, token = await Accounts(redis, keys).create_key("feed-bench", Nanos(10**9), "total")
        await book.upsert("bench", [_offer(i, -1) for i in range(OFFERS)])
        sent: dict[int, float] = {}
        with ServerProcess(redis_url, prefix) as server:
            subscribe = subscribe_frame(batch_ms)
            with SubscriberProcess(server.port, token, subscribers, subscribe) as clients:
                cpu = (server.cpu_s(), clients.cpu_s())
                clients.reset()
                changes = await _drive(book, sent, rate, seconds)
                settled = await _settle(clients, subscribers * changes, timeout=10)
                server_cpu, client_cpu = server.cpu_s() - cpu[0], clients.cpu_s() - cpu[1]
                numbers, arrivals, frames = clients.results()
        ms = sorted((t - sent[k]) * 1000 for k, t in zip(numbers, arrivals, strict=True))
        return {
            "subscribers": subscribers,
            "changes_per_s": rate,
            "batch_ms": batch_ms,
            "changes": changes,
            "expected": subscribers * changes,
            "delivered": len(ms),
            "p50_ms": round(_pct(ms, 50), 2),
            "p99_ms": round(_pct(ms, 99), 2),
            "max_ms": round(ms[-1], 2) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
            # CPU seconds the server process used per message sent: independent of what else
            # runs on the machine (NaN where /proc is unavailable).
            "frames": frames,
            "server_cpu_us_per_message": round(server_cpu / max(1, len(ms)) * 1e6, 2),
            "server_cpu_share": round(server_cpu / (seconds + settled), 2),
            "server_cpu_s": round(server_cpu, 2),
            "subscribers_cpu_s": round(client_cpu, 2),
        }
    finally:
        stale = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=5000)]
        for i in range(0, len(stale), 1000):
            await redis.delete(*stale[i : i + 1000])
        await redis.aclose()


def _offer(i: int, change: int) -> Offer:
    return Offer(
        provider="bench", offer_id=f"o{i}", model=MODEL,
        input_price=PriceMicros(100_000 + i), output_price=PriceMicros(300_000 + i),
        cached_input_price=PriceMicros(50_000), concurrency=64, quality=90,
        context_window=128_000, max_output_tokens=4096, features=frozenset({"streaming"}),
        seq=0, upstream_model=f"bench-{change}", ttl_ms=300_000,
    )  # fmt: skip


async def _drive(book: Book, sent: dict[int, float], rate: int, seconds: int) -> int:
    """Re-quote one offer per tick (a body change: a `changed` update); returns the count."""
    start = time.perf_counter()
    total = rate * seconds
    for k in range(total):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[k] = time.perf_counter()
        await book.upsert("bench", [_offer(k % OFFERS, k)])
    return total


async def _settle(clients: SubscriberProcess, expected: int, timeout: float) -> float:
    """Wait for the deliveries still due; returns the seconds waited."""
    start = time.monotonic()
    while clients.arrived < expected and time.monotonic() < start + timeout:
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def _pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def main() -> None:
    """`python -m auction.feed_bench [--quick]` with REDIS_URL set: print the figures."""
    import sys

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    figures = asyncio.run(bench_feed(url, f"feedbench-{os.getpid()}", "--quick" in sys.argv))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
