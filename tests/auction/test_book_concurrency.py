"""Capacity is never oversold when several OS processes reserve against one offer at once."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import uuid
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import redis.asyncio as aioredis

from auction.book import Book
from auction.book_stream import read_changes
from auction.keys import Keys
from clearing.money import PriceMicros
from clearing.types import Offer

MODEL = "llama-3.1-8b-instruct"
CONCURRENCY = 5
PROCESSES = 4
TASKS = 4  # concurrent reserve loops per process
LOOPS = 60  # reserve attempts per loop
CTX = mp.get_context("spawn")


def make_offer(concurrency: int = CONCURRENCY) -> Offer:
    return Offer(
        provider="acme",
        offer_id="shared",
        model=MODEL,
        input_price=PriceMicros(100_000),
        output_price=PriceMicros(200_000),
        cached_input_price=PriceMicros(50_000),
        concurrency=concurrency,
        quality=60,
        context_window=8192,
        max_output_tokens=2048,
        features=frozenset(),
        seq=0,
        ttl_ms=60_000,
    )


async def _reserve_loops(url: str, prefix: str) -> tuple[int, int, int]:
    client = aioredis.Redis.from_url(url)
    book = Book(client, Keys(prefix))
    offer = make_offer()
    counts = [0, 0, 0]  # ok, released, no_capacity

    async def loop() -> None:
        for _ in range(LOOPS):
            rid = uuid.uuid4().hex
            result = await book.reserve(offer, rid, 10_000)
            if result == "ok":
                counts[0] += 1
                await asyncio.sleep(0.001)  # hold the unit while others try
                released = await book.release(MODEL, offer.ref, rid)
                counts[1] += released  # not `+= await`: that reads counts[1] before awaiting
            else:
                assert result == "no_capacity", result
                counts[2] += 1

    try:
        await asyncio.gather(*(loop() for _ in range(TASKS)))
    finally:
        await client.aclose()
    return counts[0], counts[1], counts[2]


def reserve_worker(url: str, prefix: str, go: Event, results: Queue[tuple[int, int, int]]) -> None:
    go.wait(30)
    results.put(asyncio.run(_reserve_loops(url, prefix)))


async def _hold_and_crash(url: str, prefix: str, ttl_ms: int) -> None:
    client = aioredis.Redis.from_url(url)
    book = Book(client, Keys(prefix))
    for i in range(CONCURRENCY):
        assert await book.reserve(make_offer(), f"crashed-{i}", ttl_ms) == "ok"


def crashing_holder(url: str, prefix: str, ttl_ms: int) -> None:
    asyncio.run(_hold_and_crash(url, prefix, ttl_ms))
    os._exit(3)  # die holding every unit, with no release and no cleanup


async def test_processes_never_hold_more_than_the_offers_concurrency(
    redis_client: aioredis.Redis, redis_url: str, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    offer = make_offer()
    await book.upsert("s1", [offer])
    go = CTX.Event()
    results: Queue[tuple[int, int, int]] = CTX.Queue()
    procs: list[SpawnProcess] = [
        CTX.Process(target=reserve_worker, args=(redis_url, key_prefix, go, results))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    go.set()
    # An independent observer: the reservation set may hold expired members, never live
    # ones beyond the concurrency, so its size bounds what is in flight.
    inflight_key = keys.in_flight(MODEL, offer.ref)
    most_seen, deadline = 0, time.monotonic() + 40
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        most_seen = max(most_seen, await redis_client.zcard(inflight_key))
    outcomes = [results.get(timeout=10) for _ in procs]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    assert most_seen <= CONCURRENCY
    # Inside the script: each reserve records the live count it left in the change stream.
    log = await read_changes(redis_client, keys, MODEL)
    counts = [c.in_flight for c in log if c.kind == "capacity"]
    assert counts and max(c for c in counts if c is not None) == CONCURRENCY  # it was contended
    ok, released, refused = (sum(o[i] for o in outcomes) for i in range(3))
    assert ok + refused == PROCESSES * TASKS * LOOPS
    assert refused > 0
    assert released == ok  # every reservation that was granted was given back exactly once
    assert len(counts) == ok + released
    assert await book.in_flight(MODEL, offer.ref) == 0


async def test_a_crashed_holders_units_come_back_after_their_ttl(
    redis_client: aioredis.Redis, redis_url: str, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    offer = make_offer()
    await book.upsert("s1", [offer])
    proc = CTX.Process(target=crashing_holder, args=(redis_url, key_prefix, 600))
    proc.start()
    proc.join(20)
    assert proc.exitcode == 3
    started = time.monotonic()
    assert await book.reserve(offer, "after", 5000) == "no_capacity"
    while await book.reserve(offer, "after", 5000) != "ok":
        assert time.monotonic() - started < 5, "the crashed holder's units never came back"
        await asyncio.sleep(0.02)
    # The holder took its units one after another, so they come back one after another.
    while await book.in_flight(MODEL, offer.ref) != 1:
        assert time.monotonic() - started < 5, "the crashed holder's units never came back"
        await asyncio.sleep(0.02)
    # The sweep clears whatever the crashed holder left in the model-wide reservation set.
    await book.expire([MODEL])
    assert await redis_client.zcard(keys.reservations(MODEL)) == 1
