"""The book's bidder path on the lean client (`Book(runner=...)`): the same book as redis-py's.

Each scenario runs on both paths (real time: a pinned `now_ms` always takes redis-py's), and
the lean path is also checked on a fresh Redis 6.2 (scripts load themselves) and with Redis
away (a redis-py error, which the bidder route answers with `unavailable`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auction.book import Book
from auction.book_stream import read_changes
from auction.book_upsert import UpsertPacker, upsert_args
from auction.commands import Runner, script
from auction.embedded import EmbeddedRedis
from auction.keys import Keys
from auction.offer_codec import OfferCodec
from auction.resp import Arg, RespClient
from auction.scripts import source
from clearing.money import PriceMicros
from tests.auction.test_book import MODEL, OTHER, make_offer
from tests.e2e.conftest import free_port


@pytest.fixture(params=["redis-py", "lean"])
async def book(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_url: str, key_prefix: str
) -> AsyncIterator[Book]:
    runner = Runner(RespClient(redis_url), redis_client) if request.param == "lean" else None
    book = Book(redis_client, Keys(key_prefix), runner=runner)
    yield book
    await book.aclose()


async def refs(book: Book, model: str = MODEL) -> list[str]:
    return [offer.ref for offer, _ in (await book.snapshot(model)).entries]


async def test_one_quote_across_models_and_a_move(book: Book, redis_client: aioredis.Redis) -> None:
    seqs = await book.upsert("s1", [make_offer("a"), make_offer("b"), make_offer("c", model=OTHER)])
    assert seqs == {"acme/a": 1, "acme/b": 2, "acme/c": 1}  # seq counts per model
    moved = await book.upsert("s1", [make_offer("b", model=OTHER), make_offer("a")])
    assert moved == {"acme/b": 2, "acme/a": 1}  # a unchanged keeps its seq
    assert await refs(book) == ["acme/a"]
    assert await refs(book, OTHER) == ["acme/c", "acme/b"]
    kinds = [(c.kind, c.ref) for c in await read_changes(redis_client, book.keys, MODEL)]
    assert kinds == [("new", "acme/a"), ("new", "acme/b"), ("withdrawn", "acme/b")]
    # The offer-id index followed the move: withdraw finds b in its new book.
    assert sorted(await book.withdraw("acme", ["b", "c", "nope"])) == ["acme/b", "acme/c"]
    assert await refs(book, OTHER) == []


async def test_refresh_and_cancel_cover_every_model(book: Book) -> None:
    await book.upsert("s1", [make_offer("a"), make_offer("b"), make_offer("c", model=OTHER)])
    await book.upsert("s2", [make_offer("b"), make_offer("d")])  # s2 takes b over
    assert await book.refresh("s1", [MODEL, OTHER]) == 2  # a and c
    assert await book.refresh("s1", []) == 0
    assert sorted(await book.cancel_session("s1", [MODEL, OTHER])) == ["acme/a", "acme/c"]
    assert await book.cancel_session("s1", [MODEL, OTHER]) == []
    assert await refs(book) == ["acme/b", "acme/d"]


async def test_the_lean_path_loads_its_scripts_on_a_fresh_redis_6(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = aioredis.Redis.from_url(server.url)
        book = Book(client, Keys("fresh"), runner=Runner(RespClient(server.url), client))
        try:
            assert await book.upsert("s1", [make_offer("a"), make_offer("x", model=OTHER)]) == {
                "acme/a": 1,
                "acme/x": 1,
            }
            assert await book.refresh("s1", [MODEL, OTHER]) == 2
            assert sorted(await book.cancel_session("s1", [MODEL, OTHER])) == ["acme/a", "acme/x"]
        finally:
            await book.aclose()
            await client.aclose()


async def test_redis_away_is_a_redis_error(redis_client: aioredis.Redis, key_prefix: str) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    book = Book(redis_client, Keys(key_prefix), runner=Runner(RespClient(nowhere), redis_client))
    try:
        with pytest.raises(RedisError):
            await book.upsert("s1", [make_offer("a")])
        with pytest.raises(RedisError):
            await book.refresh("s1", [MODEL])
    finally:
        await book.aclose()
    assert await refs(Book(redis_client, Keys(key_prefix))) == []


@pytest.mark.parametrize("provider", ["acme", "café"])  # a non-ASCII name: byte lengths differ
def test_the_packed_upsert_is_the_scripts_command_byte_for_byte(provider: str) -> None:
    # `UpsertPacker` packs each offer's arguments itself; it must equal the generic `script`.
    keys = Keys("packed")
    book = Book(aioredis.Redis(), keys)  # never connects: only its layout and codec are used
    codec = OfferCodec()
    offers = [
        make_offer("a", provider=provider),
        make_offer("b", provider=provider, tokens_per_minute=5_000, input_price=PriceMicros(7)),
    ]
    args: list[Arg] = ["s1"]
    for offer in offers:
        args.extend(upsert_args(offer, codec.body(offer)))
    script_keys, head = book._layout(MODEL, None)
    generic = script("upsert", script_keys, args, prelude="book_lib", fixed=tuple(head))
    sha = hashlib.sha1(source("upsert", "book_lib").encode()).hexdigest()
    packer = UpsertPacker(sha, codec.body)
    for _ in range(2):  # the second time from the packed head it kept
        packed = packer.command(MODEL, lambda: book._layout(MODEL, None), "s1", offers)
        assert (packed.packed, packed.script) == (generic.packed, generic.script)
        assert [str(a) for a in packed.args] == [str(a) for a in generic.args]  # ints as text


async def test_an_offer_moved_by_another_process_is_withdrawn_from_its_old_book(
    redis_client: aioredis.Redis, redis_url: str, key_prefix: str
) -> None:
    # `here` remembers where it put "x" and re-quotes it without looking the index up first;
    # meanwhile `there` (another process) moved "x" to OTHER. The re-quote must still leave
    # "x" in one book only, and the index pointing at it.
    keys = Keys(key_prefix)
    here = Book(redis_client, keys, runner=Runner(RespClient(redis_url), redis_client))
    there = Book(redis_client, keys, runner=Runner(RespClient(redis_url), redis_client))
    try:
        await here.upsert("s1", [make_offer("x"), make_offer("y")])
        await there.upsert("s2", [make_offer("x", model=OTHER)])
        assert await refs(here) == ["acme/y"] and await refs(here, OTHER) == ["acme/x"]
        await here.upsert("s1", [make_offer("x", input_price=PriceMicros(5)), make_offer("y")])
        assert await refs(here) == ["acme/y", "acme/x"]
        assert await refs(here, OTHER) == []
        assert await redis_client.hget(keys.provider_offers("acme"), "x") == MODEL.encode()
        # The index was repaired too: a withdraw by id finds the offer.
        assert await there.withdraw("acme", ["x"]) == ["acme/x"]
        # And an index entry lost from Redis is written again.
        await redis_client.delete(keys.provider_offers("acme"))
        await here.upsert("s1", [make_offer("y", input_price=PriceMicros(9))])
        assert await redis_client.hget(keys.provider_offers("acme"), "y") == MODEL.encode()
    finally:
        await here.aclose()
        await there.aclose()
