"""A process's book replica follows changes made through the Book, and reloads after a gap."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from auction.book import Book
from auction.book_stream import BookChange
from auction.keys import Keys
from auction.replica import BookReplica
from clearing.money import PriceMicros
from clearing.types import Offer, OfferLive

MODEL = "mistral-small"
OTHER = "deepseek-v3"


def make_offer(offer_id: str, model: str = MODEL, price: int = 100_000) -> Offer:
    return Offer(
        provider="acme",
        offer_id=offer_id,
        model=model,
        input_price=PriceMicros(price),
        output_price=PriceMicros(2 * price),
        cached_input_price=PriceMicros(price),
        concurrency=3,
        quality=70,
        context_window=32_768,
        max_output_tokens=4096,
        features=frozenset({"tools"}),
        seq=0,
        ttl_ms=60_000,
    )


@pytest.fixture
def book(redis_client: aioredis.Redis, key_prefix: str) -> Book:
    return Book(redis_client, Keys(key_prefix))


@pytest.fixture
async def replica(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[BookReplica]:
    replica = BookReplica(redis_client, Keys(key_prefix), [MODEL, OTHER], block_ms=200)
    yield replica
    await replica.stop()


def state(replica: BookReplica) -> list[tuple[Offer, OfferLive]]:
    snap = replica.snapshot()
    return sorted(((o, snap.live.get(o.ref, OfferLive())) for o in snap.offers), key=_ref)


async def truth(book: Book) -> list[tuple[Offer, OfferLive]]:
    return sorted(await book.load([MODEL, OTHER]), key=_ref)


def _ref(entry: tuple[Offer, OfferLive]) -> str:
    return entry[0].ref


async def test_start_loads_the_book_and_changes_follow(book: Book, replica: BookReplica) -> None:
    await book.upsert("s1", [make_offer("a"), make_offer("b", OTHER)])
    assert await book.reserve(make_offer("a"), "r1", 10_000) == "ok"
    await replica.start()
    assert state(replica) == await truth(book)
    assert replica.live["acme/a"].in_flight == 1
    seen: list[BookChange] = []
    replica.add_listener(seen.append)

    await book.upsert("s1", [make_offer("c")])
    await replica.wait_for(lambda: replica.index.get("acme/c") is not None, timeout=2)
    await book.upsert("s1", [make_offer("a", price=90_000)])
    await book.withdraw("acme", ["b"])
    assert await book.reserve(make_offer("c"), "r2", 10_000) == "ok"
    await book.release(MODEL, "acme/a", "r1")
    await replica.sync(timeout=2)
    assert state(replica) == await truth(book)
    assert replica.index.get("acme/a") == replace(
        make_offer("a", price=90_000), seq=3
    )  # seq counts per model
    assert replica.live["acme/c"].in_flight == 1
    assert replica.live["acme/a"].in_flight == 0
    # In order within each model's stream (the streams are read together, in batches).
    assert [(c.kind, c.ref) for c in seen if c.model == MODEL] == [
        ("new", "acme/c"),
        ("changed", "acme/a"),
        ("capacity", "acme/c"),
        ("capacity", "acme/a"),
    ]
    assert [(c.kind, c.ref) for c in seen if c.model == OTHER] == [("withdrawn", "acme/b")]
    assert replica.reloads == 0


async def test_removal_kinds_leave_the_replica(book: Book, replica: BookReplica) -> None:
    await replica.start()
    await book.upsert("s1", [make_offer("a"), make_offer("b")])
    await book.upsert("s2", [make_offer("c", OTHER)])
    await replica.sync(timeout=2)
    assert len(replica.index) == 3
    await book.cancel_session("s2", [OTHER])
    await book.expire([MODEL], now_ms=2**52)  # far in the future: everything expired
    await replica.sync(timeout=2)
    assert len(replica.index) == 0
    assert replica.snapshot().live == {}


async def test_a_listener_can_leave_and_a_broken_one_does_not_stop_the_replica(
    book: Book, replica: BookReplica
) -> None:
    await replica.start()
    seen: list[str] = []
    stop = replica.add_listener(lambda c: seen.append(c.ref))

    def broken(change: BookChange) -> None:
        raise RuntimeError("listener bug")

    replica.add_listener(broken)
    await book.upsert("s1", [make_offer("a")])
    await replica.sync(timeout=2)
    stop()
    await book.upsert("s1", [make_offer("b")])
    await replica.sync(timeout=2)
    assert seen == ["acme/a"]
    assert replica.index.get("acme/b") is not None


async def test_a_gap_in_the_stream_forces_a_reload(
    book: Book, replica: BookReplica, redis_url: str, key_prefix: str
) -> None:
    await book.upsert("s1", [make_offer("a"), make_offer("b"), make_offer("x", OTHER)])
    await replica.start()
    seen: list[BookChange] = []
    replica.add_listener(seen.append)

    async def burst() -> None:
        # Another process's Book with a short stream: 300 re-prices trim what came first.
        client = aioredis.Redis.from_url(redis_url)
        try:
            short = Book(client, Keys(key_prefix), maxlen=10)
            for price in range(1, 301):
                await short.upsert("s2", [make_offer("a", price=price)])
            await short.withdraw("acme", ["b"])
        finally:
            await client.aclose()

    # The thread blocks this event loop, so the replica cannot read while the stream is trimmed.
    thread = threading.Thread(target=asyncio.run, args=(burst(),))
    thread.start()
    thread.join(30)
    await replica.sync(timeout=5)
    assert replica.reloads == 1
    assert [c.model for c in seen if c.kind == "resync"] == [MODEL]
    assert state(replica) == await truth(book)
    assert replica.index.get("acme/a") == replace(make_offer("a", price=300), seq=302)
    assert replica.index.get("acme/b") is None
    assert replica.version(MODEL) == 2 + 300 + 1
    assert replica.version(OTHER) == 1


async def test_wait_for_gives_up_after_its_timeout(replica: BookReplica) -> None:
    await replica.start()
    with pytest.raises(TimeoutError):
        await replica.wait_for(lambda: replica.index.get("acme/never") is not None, timeout=0.1)


async def test_a_trickle_of_changes_is_gathered_and_a_flood_read_at_once(
    book: Book, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    # A gather of a minute makes the two cases plain: after a read of one change the next
    # waits; after a read of 20 (one upsert of 20 offers: one script, one read) it does not.
    replica = BookReplica(
        redis_client, Keys(key_prefix), [MODEL], block_ms=200, gather_ms=60_000, gather_below=16
    )
    await replica.start()
    try:
        await book.upsert("s1", [make_offer(f"o{n}") for n in range(20)])
        await replica.wait_for(lambda: len(replica.index) == 20, timeout=5)
        await book.upsert("s1", [make_offer("after-flood")])
        await replica.wait_for(lambda: replica.index.get("acme/after-flood") is not None, 5)
        await book.upsert("s1", [make_offer("after-trickle")])
        with pytest.raises(TimeoutError):  # gathered: read a minute after the last read
            await replica.wait_for(lambda: replica.index.get("acme/after-trickle") is not None, 1)
    finally:
        await replica.stop()
