"""The price feed's async shell: one hub per process fans book changes and trades out to sockets.

Book changes come from this process's `BookReplica` (a listener, called after each change is
applied, so a snapshot taken then is consistent with the changes queued after it). Trades come
from the trade stream, `Keys.trades()`, which every process reads on its own with XREAD (not a
consumer group: every process needs every trade). Fan-out never awaits a client: it only puts
work into each connection's `FeedSession` and wakes that connection's writer task, which drains
the session's outbox into the socket at whatever pace the client reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from auction.book_stream import BookChange, text
from auction.feed import BookView, Close, FeedLimits, FeedSession, SnapshotCache, update_text
from auction.feed_wire import Trade, WireChange, WireTrade, dumps
from auction.keys import Keys
from auction.resp import RespClient, RespError, StreamReads, url_of
from auction.scripts import register

__all__ = ["FeedConnection", "FeedHub", "Trade", "publish_trade"]

log = logging.getLogger(__name__)

CLOSE_REVOKED = Close(4001, "the API key was revoked")
_MAX_BACKOFF_S = 2.0


async def publish_trade(
    redis: aioredis.Redis, keys: Keys, trade: Trade, *, maxlen: int = 10_000
) -> str:
    """Append a settled trade to the public trade stream; returns the stream entry id.

    The settlement code calls this once per settled request; every server process's hub reads
    the stream and sends the trade to its `trades` subscribers.
    """
    script = register(redis, "trade_publish")
    result = await script(
        keys=[keys.trades(), keys.trades_version()], args=[maxlen, dumps(trade.to_json())]
    )
    assert isinstance(result, list)
    return text(result[1])


class Replica(BookView, Protocol):
    """What the hub needs of `auction.replica.BookReplica`."""

    def add_listener(self, listener: Callable[[BookChange], None]) -> Callable[[], None]: ...


class FeedConnection:
    """One subscriber: its session, the event that wakes its writer, and why it must end."""

    __slots__ = ("ended", "ending", "key_id", "session", "wake")

    def __init__(self, session: FeedSession, key_id: str) -> None:
        self.session = session
        self.key_id = key_id
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()
        self.ending: Close | None = None

    def end(self, close: Close) -> None:
        if self.ending is None:
            self.ending = close
            self.ended.set()


class FeedHub:
    """Fan-out of one process's book changes and trades to its feed connections.

    Args:
        redis: the market's Redis (the trade stream is read with XREAD BLOCK on a connection of
            its own, with the lean RESP client: every settlement wakes the reader).
        keys: key names.
        replica: this process's book replica, already started or started before `start`.
        models: the catalogue's model ids.
        limits: per-connection limits.
        tick_s: how often heartbeats are checked.
        close_timeout_s: how long a close frame may wait for a lagging client.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        replica: Replica,
        models: Iterable[str],
        *,
        limits: FeedLimits | None = None,
        tick_s: float = 0.25,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._resp = RespClient(url_of(redis))  # blocks in XREAD: used for nothing else
        self._keys = keys
        self._replica = replica
        self._models = frozenset(models)
        self._limits = limits or FeedLimits()
        self._tick_s = tick_s
        self._close_timeout_s = close_timeout_s
        self._cache = SnapshotCache(replica)
        self._conns: set[FeedConnection] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: Callable[[], None] | None = None
        self._stopping = False
        self.trade_block_ms = 1000
        self.trade_batch = 100  # below `max_pending`, so one batch cannot cut a reading client off
        self.changes = 0
        self.trades = 0
        self.trades_missed = 0
        self.slow_closes = 0

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        """Follow the replica and, from the newest entry now, the trade stream."""
        position = await self._trade_position()
        self._stopping = False
        self._unlisten = self._replica.add_listener(self._on_change)
        self._tasks = [
            asyncio.create_task(self._follow_trades(*position), name="feed-trades"),
            asyncio.create_task(self._tick_forever(), name="feed-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop fanning out (open connections stay open until the server closes them)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        reader, ticker = tasks
        ticker.cancel()
        # Cancelling the lean client's blocking XREAD is safe (its late reply is dropped).
        self._stopping = True
        reader.cancel()
        await asyncio.wait(tasks, timeout=1)
        await self._resp.aclose()

    # -- connections ------------------------------------------------------------------------------
    def open(self, key_id: str) -> FeedConnection:
        """Register a new subscriber (its session starts with no subscription)."""
        now = _now_ms()
        session = FeedSession(self._replica, self._models, self._limits, now, self._cache)
        conn = FeedConnection(session, key_id)
        self._conns.add(conn)
        return conn

    def close(self, conn: FeedConnection) -> None:
        self._conns.discard(conn)

    def drop_key(self, key_id: str) -> int:
        """End every connection of a revoked key (close 4001); returns how many."""
        found = [c for c in self._conns if c.key_id == key_id]
        for conn in found:
            conn.end(CLOSE_REVOKED)
        return len(found)

    async def serve(self, websocket: WebSocket, key_id: str) -> None:
        """Run one accepted WebSocket until either side ends it."""
        conn = self.open(key_id)
        conn.wake.set()
        tasks = [
            asyncio.create_task(self._read(websocket, conn)),
            asyncio.create_task(self._write(websocket, conn)),
            asyncio.create_task(conn.ended.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, WebSocketDisconnect):
                    log.warning("feed: connection ended by %r", outcome)
            self.close(conn)
        if conn.ending is not None:
            await self._send_close(websocket, conn.ending)

    async def _read(self, websocket: WebSocket, conn: FeedConnection) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            conn.session.receive(data if data is not None else message.get("bytes") or b"")
            self._after(conn)

    async def _write(self, websocket: WebSocket, conn: FeedConnection) -> None:
        session, loop = conn.session, asyncio.get_running_loop()
        next_at = 0.0  # batched: when the next frame may go
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                if session.batch_ms is None or not session.has_output:
                    await conn.wake.wait()
                if session.batch_ms is not None:
                    # Waiting with `wake` set keeps the fan-out's set() a no-op; a busy batched
                    # connection then costs one task switch per frame, not one per change.
                    if (delay := next_at - loop.time()) > 0:
                        await asyncio.sleep(delay)
                    next_at = loop.time() + (session.batch_ms or 0) / 1000
                conn.wake.clear()
                while (frame := session.next_frame()) is not None:
                    await websocket.send_text(frame)

    async def _send_close(self, websocket: WebSocket, close: Close) -> None:
        # A lagging client may never read far enough to see the close frame; don't wait forever.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_timeout_s):
                await websocket.close(close.code, close.reason)

    def _after(self, conn: FeedConnection) -> None:
        session = conn.session
        if session.close is not None:
            self.slow_closes += conn.ending is None
            conn.end(session.close)
        elif session.has_output:
            conn.wake.set()

    # -- fan-out ----------------------------------------------------------------------------------
    def _on_change(self, change: BookChange) -> None:
        self.changes += 1
        # Every change of every model passes here: one nobody follows costs no encoding.
        model = change.model
        followers = [conn for conn in self._conns if conn.session.follows(model)]
        if not followers:
            return
        wire = WireChange.of(change)
        text = update_text(wire)  # once for every session
        for conn in followers:  # a change never closes a session (updates are conflated)
            if conn.session.on_change(wire, text):
                conn.wake.set()

    def _on_trade(self, trade: Trade) -> None:
        self.trades += 1
        wire = WireTrade.of(trade)
        for conn in self._conns:
            conn.session.on_trade(wire)
            self._after(conn)

    def _on_missed(self, missed: int) -> None:
        self.trades_missed += missed
        log.warning(
            "feed: %d trades were trimmed from the stream before this process read them", missed
        )
        for conn in self._conns:
            conn.session.on_trades_missed(missed)
            self._after(conn)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            now = _now_ms()
            for conn in list(self._conns):
                conn.session.tick(now)
                self._after(conn)

    # -- the trade stream ----------------------------------------------------------------------
    async def _trade_position(self) -> tuple[str, int | None]:
        newest = await self._redis.xrevrange(self._keys.trades(), count=1)
        if not newest:
            return "0-0", None
        entry_id, fields = newest[0]
        return text(entry_id), _entry_n(fields)

    async def _follow_trades(self, last_id: str, last_n: int | None) -> None:
        backoff = 0.05
        key, batch, block_ms = self._keys.trades(), self.trade_batch, self.trade_block_ms
        reads = StreamReads(self._resp, [key], batch, block_ms)
        while not self._stopping:
            try:
                [(_, entries)] = await reads.read([last_id]) or [("", [])]
                backoff = 0.05
            except (RedisError, RespError, OSError):  # ConnectionError is an OSError
                log.warning("feed: reading trades failed", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            for entry_id, fields in entries:
                n = _entry_n(fields)
                if last_n is not None and n is not None and n > last_n + 1:
                    self._on_missed(n - last_n - 1)
                last_id, last_n = text(entry_id), n
                trade = _entry_trade(fields)
                if trade is not None:
                    self._on_trade(trade)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _field(fields: object, name: str) -> str | None:
    if not isinstance(fields, dict):
        return None
    value = fields.get(name.encode(), fields.get(name))
    return None if value is None else text(value)


def _entry_n(fields: object) -> int | None:
    n = _field(fields, "n")
    return None if n is None else int(n)


def _entry_trade(fields: object) -> Trade | None:
    raw = _field(fields, "trade")
    try:
        return Trade.from_json(json.loads(raw or ""))
    except (ValueError, TypeError, KeyError):
        log.warning("feed: skipping a malformed trade entry: %.200s", raw)
        return None
