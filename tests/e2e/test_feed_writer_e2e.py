"""The feed's frame writer over real sockets: frames written below ASGI, coalesced writes, the
ASGI fallback, and the trade stream read only while someone subscribes to trades."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from auction.book import Book
from auction.feed import FeedLimits
from auction.feed_hub import publish_trade
from auction.keys import Keys
from clearing.money import PriceMicros, format_price
from tests.e2e.conftest import Marketplace
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


async def messages_until(ws: ClientConnection, ref: str, price: int | None = None) -> list[Message]:
    """Every message (heartbeats too) up to the update of `ref` (to `price`, when given)."""
    want = None if price is None else format_price(PriceMicros(price))

    def last(m: Message) -> bool:
        if m["type"] != "update" or m["ref"] != ref:
            return False
        return want is None or m["offer"]["input_usd_per_mtok"] == want

    return await recv_until(ws, last, heartbeats=True)


def numbered_on(messages: list[Message], after: int) -> bool:
    return [m["seq"] for m in messages] == list(range(after + 1, after + 1 + len(messages)))


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_frames_written_below_asgi_reach_a_websockets_client_in_seq_order(
    server: Server, book: Book, api_key: str, compression: str | None
) -> None:
    # permessage-deflate negotiated or not: the writer's frames are uncompressed and valid.
    ws = await open_feed(server.url, api_key, compression=compression)
    snap = await subscribe(ws, ["book"], ["gpt-4o"])
    writes = server.hub.writer.writes
    for price in range(1, 31):
        await book.upsert("s1", [offer("hot", price=price)])
    got = await messages_until(ws, "acme/hot", 30)
    assert numbered_on(got, snap["seq"])
    assert [m["offer"]["input_usd_per_mtok"] for m in got if m["type"] == "update"] == [
        format_price(PriceMicros(p)) for p in range(1, 31)
    ]  # each re-quote read in time: none conflated
    heartbeat = await recv(ws, timeout=2)
    assert heartbeat == {"type": "heartbeat", "seq": got[-1]["seq"] + 1, "ts": heartbeat["ts"]}
    assert server.hub.writer.writes > writes  # written by the writer, not through ASGI
    await ws.close()


async def test_a_burst_goes_out_in_fewer_writes_than_frames(
    server: Server, book: Book, api_key: str
) -> None:
    sockets = [await open_feed(server.url, api_key) for _ in range(3)]
    for ws in sockets:
        await subscribe(ws, ["book"], ["gpt-4o"])
    writer = server.hub.writer
    writes, frames = writer.writes, writer.frames
    await asyncio.gather(*(book.upsert("s1", [offer(f"o{i}")]) for i in range(60)))
    for ws in sockets:
        got: list[Message] = []
        while len({m["ref"] for m in got if m["type"] == "update"}) < 60:
            got.append(await recv(ws))  # the upserts ran concurrently: in any order
        assert len([m for m in got if m["type"] == "update"]) == 60
        assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + len(got)))
        await ws.close()
    assert writer.frames - frames >= 180 and writer.writes - writes < (writer.frames - frames) / 2


async def test_without_a_transport_frames_go_through_asgi(
    redis_url: str, key_prefix: str, book: Book, api_key: str
) -> None:
    async with feed_server(
        redis_url, key_prefix, FeedLimits(heartbeat_ms=500), hide_transport=True
    ) as srv:
        ws = await open_feed(srv.url, api_key)
        snap = await subscribe(ws, ["book"], ["gpt-4o"])
        for i in range(10):  # ten offers: nothing to conflate
            await book.upsert("s1", [offer(f"o{i}")])
        got = await messages_until(ws, "acme/o9")
        assert numbered_on(got, snap["seq"])
        assert [m["ref"] for m in got if m["type"] == "update"] == [f"acme/o{i}" for i in range(10)]
        await ws.send(json.dumps({"type": "subscribe", "channels": ["trades"], "batch_ms": 20}))
        frame, last = json.loads(await ws.recv()), got[-1]["seq"]
        while isinstance(frame, dict):  # a heartbeat sent before the subscribe was read
            frame, last = json.loads(await ws.recv()), frame["seq"]
        assert frame[-1]["type"] == "subscribed" and numbered_on(frame, last)
        assert srv.hub.writer.writes == 0
        await ws.close()


async def test_the_trade_stream_is_read_only_while_someone_subscribes_to_trades(
    server: Server, redis_client: aioredis.Redis, key_prefix: str, api_key: str
) -> None:
    keys, follower = Keys(key_prefix), server.hub.trade_follower
    ws = await open_feed(server.url, api_key)
    await subscribe(ws, ["book"], ["gpt-4o"])
    for ts in range(5):
        await publish_trade(redis_client, keys, trade(ts=ts))
    await asyncio.sleep(0.3)
    assert follower.reads == 0 and not follower.wanted and server.hub.trades == 0

    await subscribe(ws, ["trades"], ["gpt-4o"])  # the ack comes once trades are followed
    await publish_trade(redis_client, keys, trade(ts=42))
    (got,) = [m for m in await recv_until(ws, lambda m: m["type"] == "trade")]
    assert got["ts"] == 42 and server.hub.trades == 1

    await ws.send(json.dumps({"type": "unsubscribe", "channels": ["trades"], "models": ["*"]}))
    async with asyncio.timeout(5):  # the read in flight ends within `trade_block_ms`
        while follower.positioned:
            await asyncio.sleep(0.02)
    reads = follower.reads
    for ts in range(5):
        await publish_trade(redis_client, keys, trade(ts=100 + ts))
    await asyncio.sleep(0.3)
    assert follower.reads == reads and server.hub.trades == 1
    await ws.close()


async def test_the_marketplace_app_serves_the_feed_through_the_writer(market: Marketplace) -> None:
    # The whole app (its middleware, FastAPI's exception handling) still lets the hub find
    # uvicorn's transport.
    key = await market.add_key("watcher")
    ws = await open_feed(market.url.replace("http", "ws") + "/v1/feed", key)
    hub = market.market.feed_hub
    await ws.send(json.dumps({"type": "subscribe", "channels": ["book", "trades"]}))
    assert (await recv(ws))["type"] == "subscribed"
    assert hub.writer.writes > 0 and hub.trade_follower.wanted
    await ws.close()
