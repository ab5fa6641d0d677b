"""The price feed's protocol over real sockets: the key, snapshots and updates, trades, several
server processes and batched frames (uvicorn servers on 127.0.0.1 sharing one Redis)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from auction.book import Book
from auction.feed import FeedLimits
from auction.feed_hub import Trade, publish_trade
from auction.keys import Keys
from clearing.money import PriceMicros, format_price
from tests.e2e.feed_kit import (
    Message,
    Server,
    feed_server,
    offer,
    open_feed,
    recv,
    recv_until,
    subscribe,
    trade,
)


# -- authentication -------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer sk-auc-nope", "Basic abc"])
async def test_a_bad_key_is_refused_with_401_before_the_upgrade(
    server: Server, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(InvalidStatus) as caught:
        await connect(server.url, additional_headers=headers)
    assert caught.value.response.status_code == 401
    assert json.loads(caught.value.response.body or b"")["error"]["code"] == "invalid_api_key"


# -- snapshot and updates -------------------------------------------------------------------------
async def test_snapshot_then_an_update_for_each_kind_of_change(
    server: Server, book: Book, api_key: str
) -> None:
    await book.upsert("s1", [offer("resting", price=700_000)])
    await server.replica.sync()
    ws = await open_feed(server.url, api_key)
    snap = await subscribe(ws, ["book"], ["gpt-4o"])
    assert [o["offer_id"] for o in snap["offers"]] == ["resting"]
    assert snap["best"] == {"input_usd_per_mtok": "0.7", "output_usd_per_mtok": "1.4"}
    seq = snap["seq"]

    async def expect(kind: str) -> Message:
        nonlocal seq
        (update,) = await recv_until(ws, lambda m: m["type"] == "update")
        assert update["kind"] == kind and update["seq"] == seq + 1, update
        seq = update["seq"]
        return update

    o = offer()
    await book.upsert("s1", [o])
    assert (await expect("new"))["offer"]["input_usd_per_mtok"] == "0.5"
    await book.upsert("s1", [offer(price=400_000)])
    assert (await expect("changed"))["offer"]["input_usd_per_mtok"] == "0.4"
    live = offer(price=400_000)
    assert await book.reserve(live, "r1", 30_000) == "ok"
    assert (await expect("capacity"))["in_flight"] == 1
    assert await book.release("gpt-4o", live.ref, "r1")
    assert (await expect("capacity"))["in_flight"] == 0
    assert await book.withdraw("acme", ["o1"]) == ["acme/o1"]
    assert (await expect("withdrawn"))["ref"] == "acme/o1"
    await book.upsert("s2", [offer("short", ttl_ms=1_000)])
    await expect("new")
    assert await book.expire(["gpt-4o"], now_ms=int(time.time() * 1000) + 5_000) == ["acme/short"]
    assert (await expect("expired"))["ref"] == "acme/short"
    await book.upsert("s3", [offer("mine")])
    await expect("new")
    assert await book.cancel_session("s3", ["gpt-4o"]) == ["acme/mine"]
    assert (await expect("cancelled"))["ref"] == "acme/mine"
    heartbeat = await recv(ws, timeout=2)
    assert heartbeat["type"] == "heartbeat" and heartbeat["seq"] == seq + 1
    await ws.close()


async def test_trades_published_by_settlement_reach_subscribers(
    redis_client: aioredis.Redis, key_prefix: str, server: Server, api_key: str
) -> None:
    ws = await open_feed(server.url, api_key)
    await subscribe(ws, ["trades"], ["gpt-4o"])
    await publish_trade(redis_client, Keys(key_prefix), trade("llama-3.1-8b-instruct"))
    for ts in (1, 2):
        await publish_trade(redis_client, Keys(key_prefix), trade(ts=ts))
    messages = await recv_until(ws, lambda m: m["type"] == "trade" and m["ts"] == 2)
    assert [Trade.from_json(m) for m in messages] == [trade(ts=1), trade(ts=2)]
    assert set(messages[0]) == {"type", "seq", *trade().to_json()}
    await ws.close()


async def test_trades_trimmed_before_this_process_read_them_are_announced(
    redis_client: aioredis.Redis, key_prefix: str, server: Server, api_key: str
) -> None:
    keys = Keys(key_prefix)
    ws = await open_feed(server.url, api_key)
    await subscribe(ws, ["trades"], ["gpt-4o"])
    await publish_trade(redis_client, keys, trade(ts=1))
    await recv_until(ws, lambda m: m["type"] == "trade")
    # Five trades published and trimmed away (MAXLEN) before this process's hub read them:
    await redis_client.incrby(keys.trades_version(), 5)
    await publish_trade(redis_client, keys, trade(ts=2))
    resync, after = await recv_until(ws, lambda m: m["type"] == "trade")
    assert resync == {"type": "resync", "seq": resync["seq"], "channel": "trades",
                      "reason": "trades_missed", "missed": 5}  # fmt: skip
    assert after["ts"] == 2 and after["seq"] == resync["seq"] + 1
    assert server.hub.trades_missed == 5
    await ws.close()


# -- several server processes ---------------------------------------------------------------------
async def test_a_change_made_through_one_process_reaches_subscribers_of_another(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis, book: Book, api_key: str
) -> None:
    limits = FeedLimits()
    async with (
        feed_server(redis_url, key_prefix, limits) as one,
        feed_server(redis_url, key_prefix, limits) as two,
    ):
        assert one.url != two.url
        sockets = [await open_feed(s.url, api_key) for s in (one, two)]
        for ws in sockets:
            await subscribe(ws, ["book", "trades"], ["gpt-4o"])
        await book.upsert("s1", [offer("x", price=123_000)])
        await publish_trade(redis_client, Keys(key_prefix), trade(ts=42))
        for ws in sockets:
            got = await recv_until(ws, lambda m: m["type"] == "trade")
            kinds = [(m["type"], m.get("kind")) for m in got]
            assert kinds == [("update", "new"), ("trade", None)]
            assert got[0]["offer"]["input_usd_per_mtok"] == "0.123" and got[1]["ts"] == 42
            await ws.close()


# -- batched frames (batch_ms) --------------------------------------------------------------------
async def recv_batch(ws: ClientConnection, timeout: float = 5.0) -> list[Message]:
    async with asyncio.timeout(timeout):
        frame = json.loads(await ws.recv())
    assert isinstance(frame, list) and frame and all(isinstance(m, dict) for m in frame), frame
    return frame


async def test_batched_frames_carry_every_message_in_order_and_conflate_per_offer(
    server: Server, book: Book, api_key: str
) -> None:
    ws = await open_feed(server.url, api_key)
    await ws.send(json.dumps({"type": "subscribe", "channels": ["book"], "models": ["gpt-4o"],
                              "batch_ms": 250}))  # fmt: skip
    ack, snap = await recv_batch(ws)
    assert ack["type"] == "subscribed" and ack["batch_ms"] == 250 and ack["seq"] == 1
    assert snap["type"] == "snapshot" and snap["seq"] == 2
    for price in range(1, 11):  # well within one 250 ms window: merged while they wait
        await book.upsert("s1", [offer("a", price=price * 100_000)])
    await book.upsert("s1", [offer("b", price=50_000)])
    messages: list[Message] = []
    frames = 0
    while not any(m["type"] == "update" and m["ref"] == "acme/b" for m in messages):
        messages += await recv_batch(ws)
        frames += 1
    assert [m["seq"] for m in messages] == list(range(3, 3 + len(messages)))
    updates = [m for m in messages if m["type"] == "update" and m["ref"] == "acme/a"]
    assert updates[0]["kind"] == "new" and len(updates) < 10 and frames < 10
    assert updates[-1]["offer"]["input_usd_per_mtok"] == format_price(PriceMicros(1_000_000))
    await ws.close()


@pytest.mark.parametrize("batch_ms", [5, 251, "50", None])
async def test_a_bad_batch_ms_is_refused_and_the_connection_goes_on(
    server: Server, api_key: str, batch_ms: object
) -> None:
    ws = await open_feed(server.url, api_key)
    await ws.send(json.dumps({"type": "subscribe", "channels": ["trades"], "batch_ms": batch_ms}))
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "invalid_batch_ms" and error["seq"] == 1
    await ws.send(json.dumps({"type": "subscribe", "channels": ["trades"], "batch_ms": 10}))
    (ack,) = await recv_batch(ws)
    assert ack["type"] == "subscribed" and ack["seq"] == 2
    await ws.close()
