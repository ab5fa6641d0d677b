"""The Python feed client and slow readers over real sockets: a bad key, gaps and cut
connections, conflation and the 4008 cut-off of a slow consumer, batched frames."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from auction.book import Book
from auction.feed import FeedLimits
from auction.feed_client import FeedAuthError, FeedClient
from auction.feed_hub import publish_trade
from auction.keys import Keys
from tests.e2e.feed_kit import (
    Server,
    feed_server,
    local_prices,
    offer,
    open_feed,
    recv,
    recv_until,
    replica_prices,
    subscribe,
    trade,
)


# -- authentication -------------------------------------------------------------------------------
async def test_the_client_stops_with_feed_auth_error_on_a_bad_key(server: Server) -> None:
    async with FeedClient(server.url, "sk-auc-wrong", backoff_s=(0.01, 0.02)) as client:
        with pytest.raises(FeedAuthError):
            await client.wait_until(lambda c: c.synced(), timeout=5)
    assert client.stats.connects == 0


# -- the Python client: gaps and reconnects -------------------------------------------------------
class Proxy:
    """A TCP proxy on 127.0.0.1 that can drop one server frame or cut every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop_next_update = False
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        tasks = [self._pipe(reader, up_writer), self._frames(up_reader, writer)]
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await asyncio.gather(*tasks)
        writer.transport.abort()
        up_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readuntil(b"\r\n\r\n"))  # the 101 response
        while True:  # server frames are unmasked: 2 bytes, extended length, payload
            head = await reader.readexactly(2)
            length = head[1] & 0x7F
            ext = await reader.readexactly({126: 2, 127: 8}.get(length, 0))
            size = int.from_bytes(ext) if ext else length
            payload = await reader.readexactly(size)
            if self.drop_next_update and payload.startswith(b'{"type":"update"'):
                self.drop_next_update = False
                continue
            writer.write(head + ext + payload)


async def test_the_client_resyncs_after_a_gap_and_a_cut(
    server: Server, book: Book, api_key: str
) -> None:
    async with Proxy(server.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/v1/feed"
        async with FeedClient(url, api_key, models=["gpt-4o"], backoff_s=(0.05, 0.2)) as client:
            await client.wait_until(lambda c: c.synced(["gpt-4o"]), timeout=5)
            proxy.drop_next_update = True
            await book.upsert("s1", [offer("a", price=100_000)])
            await book.upsert("s1", [offer("b", price=200_000)])  # this update shows the gap
            await client.wait_until(lambda c: c.stats.gaps == 1, timeout=5)
            await client.wait_until(
                lambda c: c.synced(["gpt-4o"]) and len(c.books["gpt-4o"].offers) == 2, timeout=5
            )
            assert client.stats.resubscribes == 1 and client.stats.snapshots == 2
            assert local_prices(client) == {"acme/a": "0.1", "acme/b": "0.2"}

            proxy.cut()
            await book.upsert("s1", [offer("c", price=300_000)])  # while the client is away
            await client.wait_until(lambda c: c.stats.connects == 2 and c.synced(), timeout=5)
            await book.upsert("s1", [offer("a", price=150_000)])
            await server.replica.sync()
            await client.wait_until(lambda c: local_prices(c) == replica_prices(server), 5)
            assert client.stats.gaps == 1 and client.books["gpt-4o"].best_input() == Decimal("0.15")


# -- the slow consumer ----------------------------------------------------------------------------
async def test_a_slow_consumer_is_conflated_then_cut_off_while_a_fast_one_keeps_up(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis, book: Book, api_key: str
) -> None:
    keys = Keys(key_prefix)
    limits = FeedLimits(max_pending=200)
    async with feed_server(redis_url, key_prefix, limits, send_buffer=16_384) as srv:
        tiny = socket.socket()
        tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        tiny.connect(("127.0.0.1", srv.port))
        slow = await open_feed(srv.url, api_key, sock=tiny, max_queue=1)
        await subscribe(slow, ["book", "trades"], ["gpt-4o"])
        async with FeedClient(srv.url, api_key, models=["gpt-4o"]) as fast:
            await fast.wait_until(lambda c: c.synced(), timeout=5)
            # Phase 1: the slow client stops reading while one offer is re-priced many times.
            changes = 1000
            for start in range(0, changes, 100):
                await asyncio.gather(*(
                    book.upsert("s1", [offer("hot", price=100_000 + i)])
                    for i in range(start, start + 100)
                ))  # fmt: skip
            await srv.replica.sync()
            await fast.wait_until(lambda c: local_prices(c) == replica_prices(srv), 10)
            latest = replica_prices(srv)["acme/hot"]
            got = await recv_until(
                slow,
                lambda m: m.get("offer", {}).get("input_usd_per_mtok") == latest,
                heartbeats=True,
            )
            updates = [m for m in got if m["type"] == "update"]
            assert 0 < len(updates) < changes  # conflated: the latest price, not every step
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            # Phase 2: it stops reading again while trades flood in past the bound.
            published = 0
            async with asyncio.timeout(20):
                while srv.hub.slow_closes == 0:
                    batch = [
                        publish_trade(redis_client, keys, trade(ts=published + i))
                        for i in range(100)
                    ]
                    await asyncio.gather(*batch)
                    published += 100
                    await asyncio.sleep(0.01)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(slow)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
            assert "slow consumer" in closed.value.rcvd.reason
            await fast.wait_until(lambda c: c.stats.trades == published, timeout=10)
            assert fast.stats.gaps == 0 and fast.stats.close_codes == []
            assert srv.hub.writer.writes > 0  # frames written below ASGI, by the hub's writer


# -- batched frames (batch_ms) --------------------------------------------------------------------
async def test_the_client_follows_the_book_through_batched_frames(
    server: Server, book: Book, api_key: str
) -> None:
    async with FeedClient(server.url, api_key, models=["gpt-4o"], batch_ms=20) as client:
        await client.wait_until(lambda c: c.synced(["gpt-4o"]), timeout=5)
        for i in range(30):
            await book.upsert("s1", [offer(f"o{i % 7}", price=100_000 + i)])
        await book.withdraw("acme", ["o3"])
        await server.replica.sync()
        await client.wait_until(lambda c: local_prices(c) == replica_prices(server), timeout=5)
        assert client.stats.gaps == 0 and client.stats.errors == [] and client.stats.updates > 0
