"""`auction bench`: benchmarks that print figures (and JSON with --json).

Each benchmark is one async function in BENCHMARKS, run against a real Redis (REDIS_URL,
--redis-url, or an embedded one) under a fresh key prefix that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from auction.book import Book
from auction.embedded import EmbeddedRedis
from auction.keys import Keys
from auction.serve import settle_heap
from clearing.engine import clear
from clearing.index import BookIndex
from clearing.money import PriceMicros
from clearing.types import Offer, OfferLive, Requirements


@dataclass
class BenchContext:
    """What every benchmark gets: a Redis URL, a scratch key prefix, and the options."""

    redis_url: str
    prefix: str
    quick: bool
    results: dict[str, object] = field(default_factory=dict)


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0–100) of samples, nearest-rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize_us(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/mean in microseconds."""
    us = [s * 1e6 for s in samples_s]
    return {
        "p50_us": round(percentile(us, 50), 1),
        "p99_us": round(percentile(us, 99), 1),
        "mean_us": round(statistics.fmean(us), 1),
        "samples": len(us),
    }


def synthetic_offers(model: str, count: int, rng: random.Random) -> list[Offer]:
    """A book of `count` offers for one model from many providers, prices spread realistically."""
    offers = []
    for i in range(count):
        base = rng.randint(100_000, 3_000_000)  # $0.10 – $3.00 per Mtok
        offers.append(
            Offer(
                provider=f"p{i % 97}",
                offer_id=f"o{i}",
                model=model,
                input_price=PriceMicros(base),
                output_price=PriceMicros(base * rng.randint(1, 5)),
                cached_input_price=PriceMicros(max(1, base // 2)),
                concurrency=1_000_000,
                quality=80,
                context_window=131_072,
                max_output_tokens=8192,
                features=frozenset({"tools", "json_mode", "streaming"}),
                seq=0,
                upstream_model=model,
                ttft_ms=rng.randint(100, 2000),
                output_tokens_per_s=rng.randint(20, 300),
                ttl_ms=600_000,
            )
        )
    return offers


async def bench_clearing(ctx: BenchContext) -> None:
    """Clearing latency: rank (engine) plus the Redis reservation round trip, by book size."""
    client = aioredis.Redis.from_url(ctx.redis_url)
    book = Book(client, Keys(ctx.prefix))
    model = "llama-3.1-70b-instruct"
    rng = random.Random(7)
    sizes = [10, 100, 1000] if ctx.quick else [10, 100, 1000, 10_000]
    rounds = 300 if ctx.quick else 2000
    live: dict[str, OfferLive] = {}
    table = {}
    try:
        for size in sizes:
            index = BookIndex()
            offers = synthetic_offers(model, size, rng)
            seqs = await book.upsert(f"bench-{size}", offers)
            for offer in offers:
                index.upsert(_with_seq(offer, seqs[offer.ref]))
            rank_s, total_s = [], []
            for i in range(rounds):
                req = Requirements(
                    model=model,
                    input_tokens=rng.randint(50, 4000),
                    max_tokens=rng.randint(16, 2048),
                    max_ttft_ms=rng.choice([None, 1500]),
                )
                t0 = time.perf_counter()
                result = clear(index, live, req, depth=3)
                t1 = time.perf_counter()
                winner = result.ranked[0].offer
                rid = f"r{i}"
                await book.reserve(winner, rid, ttl_ms=30_000)
                t2 = time.perf_counter()
                await book.release(winner.model, winner.ref, rid)
                rank_s.append(t1 - t0)
                total_s.append(t2 - t0)
            table[str(size)] = {
                "rank": summarize_us(rank_s),
                "rank_plus_reserve": summarize_us(total_s),
            }
            await book.cancel_session(f"bench-{size}", [model])
    finally:
        await _drop_prefix(client, ctx.prefix)
        await client.aclose()
    ctx.results["clearing"] = table


def _with_seq(offer: Offer, seq: int) -> Offer:
    from dataclasses import replace

    return replace(offer, seq=seq)


async def _drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    batch = [k async for k in client.scan_iter(match=f"{prefix}:*", count=5000)]
    for i in range(0, len(batch), 1000):
        await client.delete(*batch[i : i + 1000])


def _delegate(name: str, module: str) -> Callable[[BenchContext], Coroutine[Any, Any, None]]:
    """A benchmark living in `module` as `bench_<name>(redis_url, prefix, quick) -> dict`."""

    async def run(ctx: BenchContext) -> None:
        bench = getattr(importlib.import_module(module), f"bench_{name}")
        ctx.results[name] = await bench(ctx.redis_url, ctx.prefix, ctx.quick)

    run.__doc__ = f"See {module}."
    return run


BENCHMARKS: dict[str, Callable[[BenchContext], Coroutine[Any, Any, None]]] = {
    "clearing": bench_clearing,
    "ingest": _delegate("ingest", "auction.ingest_bench"),  # quote ingest, quote-to-clearable
    "gateway": _delegate("gateway", "auction.gateway_bench"),  # added latency, throughput
    "feed": _delegate("feed", "auction.feed_bench"),  # fan-out to 1,000 subscribers
    "reliability": _delegate("reliability", "auction.reliability_bench"),  # load with faults
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default all)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    parser.add_argument("--redis-url", help="Redis to use (default: REDIS_URL, else embedded)")


def run_from_args(args: argparse.Namespace, environ: dict[str, str]) -> int:
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"auction bench: unknown benchmark {', '.join(unknown)}; have {', '.join(BENCHMARKS)}"
        )
        return 2
    url = args.redis_url or environ.get("REDIS_URL")
    embedded = None
    if not url:
        embedded = EmbeddedRedis(Path(".auction") / "bench")
        url = embedded.start()
    ctx = BenchContext(redis_url=url, prefix=f"bench-{uuid.uuid4().hex[:8]}", quick=args.quick)
    # The load generators and the in-process clearing bench get a server's collector settings:
    # a full collection of this process would stall the clients and be measured as latency.
    settle_heap()
    try:
        for name in names:
            asyncio.run(BENCHMARKS[name](ctx))
            if not args.json:
                print_figures(name, ctx.results.get(name))
    finally:
        if embedded is not None:
            embedded.stop()
    if args.json:
        print(json.dumps(ctx.results, indent=2))
    return 0


def print_figures(name: str, figures: object) -> None:
    """Print nested figures as indented `name: value` lines."""
    print(f"== {name}")
    _print_tree(figures, 1)


def _print_tree(node: object, depth: int) -> None:
    pad = "  " * depth
    if not isinstance(node, dict):
        print(f"{pad}{node}")
        return
    for key, value in node.items():
        if isinstance(value, dict) and all(not isinstance(v, dict) for v in value.values()):
            cells = "  ".join(f"{k}={v}" for k, v in value.items())
            print(f"{pad}{key}: {cells}")
        elif isinstance(value, dict):
            print(f"{pad}{key}:")
            _print_tree(value, depth + 1)
        else:
            print(f"{pad}{key}: {value}")
