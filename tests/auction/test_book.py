"""The order book's scripts against a real Redis: posting, expiry, withdraw, cancel, capacity."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path

import redis.asyncio as aioredis

from auction.book import Book, sweep_forever
from auction.book_stream import BookChange, parse_change, read_changes
from auction.embedded import EmbeddedRedis
from auction.keys import Keys
from auction.offer_codec import offer_to_json
from clearing.money import PriceMicros
from clearing.types import Offer, OfferLive

MODEL = "llama-3.1-70b-instruct"
OTHER = "gpt-4o-mini"
T0 = 1_800_000_000_000  # a pinned clock for the tests that do not need real time


def make_offer(offer_id: str = "fast", provider: str = "acme", **changes: object) -> Offer:
    offer = Offer(
        provider=provider,
        offer_id=offer_id,
        model=MODEL,
        input_price=PriceMicros(590_000),
        output_price=PriceMicros(790_000),
        cached_input_price=PriceMicros(300_000),
        concurrency=2,
        quality=80,
        context_window=131_072,
        max_output_tokens=8192,
        features=frozenset({"tools", "streaming"}),
        seq=0,
        upstream_model="meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        quantization="fp8",
        ttft_ms=250,
        output_tokens_per_s=180,
        region="us",
        ttl_ms=15_000,
    )
    return replace(offer, **changes)  # type: ignore[arg-type]  # test helper: keyword overrides


async def changes(redis: aioredis.Redis, keys: Keys, model: str = MODEL) -> list[BookChange]:
    return await read_changes(redis, keys, model)


async def refs(book: Book, model: str = MODEL, now_ms: int | None = T0) -> list[str]:
    return [offer.ref for offer, _ in (await book.snapshot(model, now_ms=now_ms)).entries]


# -- posting --------------------------------------------------------------------------------------
async def test_upsert_stores_every_field_and_numbers_new_offers(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    first, second = make_offer("a"), make_offer("b", tokens_per_minute=1000, region=None)
    seqs = await book.upsert("s1", [first, second], now_ms=T0)
    assert seqs == {"acme/a": 1, "acme/b": 2}
    snap = await book.snapshot(MODEL, now_ms=T0)
    assert [offer for offer, _ in snap.entries] == [replace(first, seq=1), replace(second, seq=2)]
    assert [live for _, live in snap.entries] == [OfferLive(), OfferLive()]
    log = await changes(redis_client, keys)
    assert [(c.kind, c.ref, c.n, c.ts, c.in_flight) for c in log] == [
        ("new", "acme/a", 1, T0, 0),
        ("new", "acme/b", 2, T0, 0),
    ]
    assert log[1].offer == replace(second, seq=2)
    assert (snap.version, snap.stream_id) == (2, log[1].stream_id)


async def test_requote_keeps_seq_unless_prices_change(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    await book.upsert("s1", [make_offer("a"), make_offer("b")], now_ms=T0)
    # The same offer again: same seq and no stream entry.
    assert await book.upsert("s1", [make_offer("a")], now_ms=T0 + 1) == {"acme/a": 1}
    # Other fields change: still seq 1, announced as changed.
    assert await book.upsert("s1", [make_offer("a", concurrency=9)], now_ms=T0 + 2) == {"acme/a": 1}
    # A price changes: the offer loses its time priority.
    cheaper = make_offer("a", cached_input_price=PriceMicros(1))
    assert await book.upsert("s1", [cheaper], now_ms=T0 + 3) == {"acme/a": 3}
    log = await changes(redis_client, keys)
    assert [(c.kind, c.ref) for c in log] == [
        ("new", "acme/a"),
        ("new", "acme/b"),
        ("changed", "acme/a"),
        ("changed", "acme/a"),
    ]
    assert log[2].offer == make_offer("a", concurrency=9, seq=1)
    assert log[3].offer == replace(cheaper, seq=3)
    assert await refs(book) == ["acme/b", "acme/a"]  # index order is time priority


async def test_an_offer_requoted_for_another_model_leaves_the_old_book(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    await book.upsert("s1", [make_offer("a")], now_ms=T0)
    await book.upsert("s1", [make_offer("a", model=OTHER)], now_ms=T0)
    assert await refs(book, MODEL) == []
    assert await refs(book, OTHER) == ["acme/a"]
    assert [c.kind for c in await changes(redis_client, keys)] == ["new", "withdrawn"]
    assert await book.withdraw("acme", ["a"], now_ms=T0) == ["acme/a"]
    assert await refs(book, OTHER) == []


async def test_withdraw_by_offer_id(redis_client: aioredis.Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    await book.upsert("s1", [make_offer("a"), make_offer("b"), make_offer("x", model=OTHER)])
    await book.upsert("s9", [make_offer("a", provider="rival")])
    withdrawn = await book.withdraw("acme", ["a", "nope", "x"])
    assert sorted(withdrawn) == ["acme/a", "acme/x"]
    assert await book.withdraw("acme", ["a"]) == []  # already gone
    assert await book.withdraw("acme", []) == []
    assert await refs(book, now_ms=None) == ["acme/b", "rival/a"]
    assert [c.kind for c in await changes(redis_client, keys, OTHER)] == ["new", "withdrawn"]


# -- lifetime -------------------------------------------------------------------------------------
async def test_offers_expire_by_ttl_and_heartbeats_extend_them(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys, batch=1)  # batch 1: expire must loop
    offers = [make_offer(f"o{i}", ttl_ms=1000 * (i + 1)) for i in range(3)]
    await book.upsert("s1", offers, now_ms=T0)
    assert await book.expire([MODEL], now_ms=T0 + 999) == []
    assert await book.refresh("s1", [MODEL], now_ms=T0 + 999) == 3
    # o0 lives 1000 ms after the heartbeat, o1 2000 ms, o2 3000 ms.
    assert await book.expire([MODEL], now_ms=T0 + 1998) == []
    assert await book.expire([MODEL], now_ms=T0 + 2999) == ["acme/o0", "acme/o1"]
    # A heartbeat after the ttl passed does not revive the offer.
    assert await book.refresh("s1", [MODEL], now_ms=T0 + 4000) == 0
    assert await refs(book, now_ms=T0 + 3000) == ["acme/o2"]
    assert await refs(book, now_ms=T0 + 4000) == []  # past its ttl, even before the sweep
    assert await book.expire([MODEL], now_ms=T0 + 4000) == ["acme/o2"]
    assert await book.expire([MODEL], now_ms=T0 + 4000) == []  # another process's sweep
    assert [c.kind for c in await changes(redis_client, keys)][-3:] == ["expired"] * 3


async def test_requotes_extend_offers_and_a_shorter_ttl_expires_sooner(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    # A re-quote that moves an offer's expiry later leaves the expiry index's earlier score in
    # place: the sweep must find the offer still live there, and keep it.
    keys = Keys(key_prefix)
    book = Book(redis_client, keys, batch=1)  # batch 1: expire must loop past live offers
    await book.upsert("s1", [make_offer(f"o{i}", ttl_ms=1000) for i in range(3)], now_ms=T0)
    requoted = [make_offer(f"o{i}", ttl_ms=1000, input_price=PriceMicros(7)) for i in range(3)]
    await book.upsert("s1", requoted, now_ms=T0 + 900)
    assert await book.expire([MODEL], now_ms=T0 + 1500) == []
    assert await refs(book, now_ms=T0 + 1500) == ["acme/o0", "acme/o1", "acme/o2"]
    # o0 again unchanged (no stream entry), o1 with another field: both live 1000 ms more.
    same, other = requoted[0], replace(requoted[1], region="eu")
    await book.upsert("s1", [same, other], now_ms=T0 + 1600)
    assert await book.expire([MODEL], now_ms=T0 + 1901) == ["acme/o2"]
    assert await book.expire([MODEL], now_ms=T0 + 2599) == []
    assert sorted(await book.expire([MODEL], now_ms=T0 + 2600)) == ["acme/o0", "acme/o1"]
    assert await redis_client.zcard(keys.book_expiry(MODEL)) == 0
    # A re-quote with a shorter ttl expires sooner than the first quote would have.
    await book.upsert("s1", [make_offer("a", ttl_ms=60_000)], now_ms=T0)
    await book.upsert("s1", [make_offer("a", ttl_ms=1000)], now_ms=T0 + 10)
    assert await book.expire([MODEL], now_ms=T0 + 1010) == ["acme/a"]


async def test_sweep_removes_offers_in_real_time(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    book = Book(redis_client, Keys(key_prefix))
    await book.upsert("s1", [make_offer("short", ttl_ms=200), make_offer("long")])
    sweep = asyncio.create_task(sweep_forever(book, [MODEL], interval_s=0.02))
    try:
        deadline = time.monotonic() + 3
        while await refs(book, now_ms=None) != ["acme/long"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        sweep.cancel()
    assert await refs(book, now_ms=None) == ["acme/long"]
    assert [c.kind for c in await changes(redis_client, Keys(key_prefix))][-1] == "expired"


async def test_cancel_on_disconnect_leaves_other_sessions_offers(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    await book.upsert("s1", [make_offer("a"), make_offer("b"), make_offer("c", model=OTHER)])
    await book.upsert("s2", [make_offer("b"), make_offer("d")])  # s2 takes b over
    assert await book.refresh("s1", [MODEL, OTHER]) == 2  # a and c
    cancelled = await book.cancel_session("s1", [MODEL, OTHER])
    assert sorted(cancelled) == ["acme/a", "acme/c"]
    assert await book.cancel_session("s1", [MODEL, OTHER]) == []
    assert await refs(book, now_ms=None) == ["acme/b", "acme/d"]
    assert [c.kind for c in await changes(redis_client, keys)][-1] == "cancelled"
    assert sorted(await book.cancel_session("s2", [MODEL])) == ["acme/b", "acme/d"]


# -- capacity -------------------------------------------------------------------------------------
async def test_reserve_answers_gone_repriced_and_no_capacity(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    offer = make_offer("a", concurrency=2, ttl_ms=1000)
    assert await book.reserve(offer, "r0", 5000, now_ms=T0) == "gone"  # never posted
    await book.upsert("s1", [offer], now_ms=T0)
    stale = replace(offer, output_price=PriceMicros(1))
    assert await book.reserve(stale, "r0", 5000, now_ms=T0) == "repriced"
    assert await book.reserve(offer, "r1", 5000, now_ms=T0) == "ok"
    assert await book.reserve(offer, "r1", 5000, now_ms=T0) == "ok"  # a repeat takes nothing
    assert await book.reserve(offer, "r2", 5000, now_ms=T0) == "ok"
    assert await book.reserve(offer, "r3", 5000, now_ms=T0) == "no_capacity"
    assert await book.in_flight(MODEL, offer.ref, now_ms=T0) == 2
    assert await book.reserve(offer, "r3", 5000, now_ms=T0 + 1000) == "gone"  # ttl passed
    await book.upsert("s1", [offer], now_ms=T0 + 1000)
    await book.withdraw("acme", ["a"], now_ms=T0 + 1000)
    assert await book.reserve(offer, "r3", 5000, now_ms=T0 + 1000) == "gone"
    caps = [c.in_flight for c in await changes(redis_client, keys) if c.kind == "capacity"]
    assert caps == [1, 2]


async def test_release_and_settle_are_idempotent(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    offer = make_offer("a", concurrency=1)
    await book.upsert("s1", [offer])
    assert await book.reserve(offer, "r1", 5000) == "ok"
    assert await book.release(MODEL, offer.ref, "r1") is True
    assert await book.release(MODEL, offer.ref, "r1") is False
    assert await book.settle(MODEL, offer.ref, "r1", 10) is False
    assert await book.reserve(offer, "r2", 5000) == "ok"
    assert await book.settle(MODEL, offer.ref, "r2", 10) is True
    assert await book.settle(MODEL, offer.ref, "r2", 10) is False
    assert await book.release(MODEL, offer.ref, "r2") is False
    assert await book.in_flight(MODEL, offer.ref) == 0
    caps = [c.in_flight for c in await changes(redis_client, keys) if c.kind == "capacity"]
    assert caps == [1, 0, 1, 0]


async def test_tokens_per_minute_counts_reserved_then_actual_tokens(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    offer = make_offer("a", concurrency=10, tokens_per_minute=1000, ttl_ms=600_000)
    await book.upsert("s1", [offer], now_ms=T0)
    assert await book.reserve(offer, "r1", 5000, tokens=600, now_ms=T0) == "ok"
    assert await book.reserve(offer, "r2", 5000, tokens=401, now_ms=T0) == "no_capacity"
    assert await book.settle(MODEL, offer.ref, "r1", 200, now_ms=T0 + 1) is True
    assert await book.reserve(offer, "r2", 5000, tokens=800, now_ms=T0 + 2) == "ok"
    assert await book.release(MODEL, offer.ref, "r2", now_ms=T0 + 3) is True  # unused: freed
    assert await book.reserve(offer, "r3", 5000, tokens=800, now_ms=T0 + 4) == "ok"
    assert await book.reserve(offer, "r4", 5000, tokens=1, now_ms=T0 + 5) == "no_capacity"
    # A minute after r1, its 200 tokens leave the window; r3's 800 stay until T0 + 60004.
    assert await book.reserve(offer, "r4", 5000, tokens=200, now_ms=T0 + 60_000) == "ok"
    snap = await book.snapshot(MODEL, now_ms=T0 + 60_000)
    assert snap.entries[0][1] == OfferLive(in_flight=1, tokens_this_minute=1000)
    last = (await changes(redis_client, keys))[-1]
    assert (last.kind, last.in_flight, last.tokens) == ("capacity", 1, 1000)


async def test_reservations_stop_counting_after_their_ttl(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    offer = make_offer("a", concurrency=2)
    await book.upsert("s1", [offer])
    started = time.monotonic()
    assert await book.reserve(offer, "r1", 400) == "ok"
    assert await book.reserve(offer, "r2", 400) == "ok"
    assert await book.reserve(offer, "r3", 400) == "no_capacity"
    while await book.reserve(offer, "r3", 400) != "ok":
        assert time.monotonic() - started < 3, "expired reservations still count"
        await asyncio.sleep(0.02)
    assert time.monotonic() - started > 0.35  # not before r1's ttl (Redis's clock vs ours)
    assert await book.release(MODEL, offer.ref, "r1") is False  # it had expired


async def test_the_sweep_frees_expired_reservations_and_says_so(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    book = Book(redis_client, keys, batch=2)
    offer = make_offer("a", concurrency=5, ttl_ms=600_000)
    await book.upsert("s1", [offer], now_ms=T0)
    for i in range(5):
        assert await book.reserve(offer, f"r{i}", 100 + i, now_ms=T0) == "ok"
    assert await book.expire([MODEL], now_ms=T0 + 102) == []  # r0, r1, r2 expire
    assert await redis_client.zcard(keys.in_flight(MODEL, offer.ref)) == 2
    assert await redis_client.zcard(keys.reservations(MODEL)) == 2
    last = (await changes(redis_client, keys))[-1]
    assert (last.kind, last.in_flight) == ("capacity", 2)
    assert await book.settle(MODEL, offer.ref, "r0", 5, now_ms=T0 + 102) is False


async def test_scripts_load_themselves_on_a_fresh_redis_6(tmp_path: Path) -> None:
    # The embedded server is Redis 6.2 and has never seen the scripts: EVALSHA answers
    # NOSCRIPT, and the call loads the script and goes on.
    with EmbeddedRedis(tmp_path) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            book = Book(client, Keys("fresh"))
            offer = make_offer("a", concurrency=1, tokens_per_minute=100)
            await book.upsert("s1", [offer])
            assert await book.reserve(offer, "r1", 5000, tokens=5) == "ok"
            assert await book.reserve(offer, "r2", 5000) == "no_capacity"
            assert await book.settle(MODEL, offer.ref, "r1", 3) is True
            assert (await book.snapshot(MODEL)).entries[0][1].tokens_this_minute == 3
            assert await book.cancel_session("s1", [MODEL]) == ["acme/a"]
        finally:
            await client.aclose()


def test_a_stream_entry_reads_alike_with_bytes_or_str_fields() -> None:
    offer = make_offer("a", seq=4)
    offer_json = json.dumps(offer_to_json(offer))
    fields = {"kind": "new", "ref": "acme/a", "model": MODEL, "n": "7", "ts": "12",
              "offer": offer_json, "in_flight": "1", "tokens": "30"}  # fmt: skip
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    from_str, from_bytes = parse_change("1-1", fields), parse_change(b"1-1", raw)
    assert from_str == from_bytes == BookChange("new", MODEL, "acme/a", 7, 12, "1-1", offer, 1, 30)
    assert from_str.offer_json == from_bytes.offer_json == offer_json
    removal = parse_change("2-0", {b"kind": b"withdrawn", b"ref": b"acme/a", b"model": b"m",
                                   b"n": b"8", b"ts": b"13"})  # fmt: skip
    assert (removal.kind, removal.offer, removal.in_flight, removal.offer_json) == (
        "withdrawn", None, None, None)  # fmt: skip
