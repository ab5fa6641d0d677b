"""The price feed's async shell: one hub per process fans book changes and trades out to sockets.

Book changes come from this process's `BookReplica` (a listener, called after each change is
applied, so a snapshot taken then is consistent with the changes queued after it). Trades come
from the trade stream, read by a `TradeFollower` only while some connection of this process
subscribes to trades. Fan-out never awaits a client: it only puts work into each connection's
`FeedSession` and marks the connection for the `FrameWriter`, which writes its frames to the
socket below the ASGI layer (one write per connection per flush) at whatever pace the client
reads. Where the server offers no transport, a writer task per connection sends through ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import redis.asyncio as aioredis
from starlette.websockets import WebSocket, WebSocketDisconnect

from auction.book_stream import BookChange
from auction.feed import (
    BookView,
    ChangeLog,
    Close,
    FeedLimits,
    FeedSession,
    SnapshotCache,
    update_bytes,
)
from auction.feed_trades import TradeFollower, publish_trade
from auction.feed_wire import Trade, WireChange, WireTrade
from auction.feed_writer import FeedConnection, FrameWriter, find_transport
from auction.keys import Keys
from auction.resp import RespClient, url_of

__all__ = ["FeedConnection", "FeedHub", "Trade", "publish_trade"]

log = logging.getLogger(__name__)

CLOSE_REVOKED = Close(4001, "the API key was revoked")


class Replica(BookView, Protocol):
    """What the hub needs of `auction.replica.BookReplica`."""

    def add_listener(self, listener: Callable[[BookChange], None]) -> Callable[[], None]: ...


class FeedHub:
    """Fan-out of one process's book changes and trades to its feed connections.

    Args:
        redis: the market's Redis (the trade stream is read with XREAD BLOCK on a connection of
            its own, with the lean RESP client).
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
        self._resp = RespClient(url_of(redis))  # blocks in XREAD: used for nothing else
        self._replica = replica
        self._models = frozenset(models)
        self._limits = limits or FeedLimits()
        self._tick_s = tick_s
        self._close_timeout_s = close_timeout_s
        self._cache = SnapshotCache(replica)
        self._log = ChangeLog()  # book changes, read by every session from its own cursor
        self._conns: set[FeedConnection] = set()
        self._followers: dict[str, set[FeedConnection]] = {}  # model -> its book's subscribers
        self._asgi_conns: set[FeedConnection] = set()  # those sending through ASGI (no transport)
        self._trade_conns: set[FeedConnection] = set()  # those subscribed to some model's trades
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: Callable[[], None] | None = None
        self.writer = FrameWriter()
        self.trade_follower = TradeFollower(
            redis,
            self._resp,
            keys,
            on_trade=self._on_trade,
            on_missed=self._on_missed,
            on_positioned=self._release_held,
        )
        self.max_log_behind = 10_000  # changes a session may leave unread before they are folded
        self.changes = 0
        self.trades = 0
        self.trades_missed = 0
        self.slow_closes = 0

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def trade_block_ms(self) -> int:
        return self.trade_follower.block_ms

    @trade_block_ms.setter
    def trade_block_ms(self, value: int) -> None:
        self.trade_follower.block_ms = value

    async def start(self) -> None:
        """Follow the replica, and the trade stream whenever a connection subscribes to trades."""
        self._unlisten = self._replica.add_listener(self._on_change)
        self._tasks = [
            asyncio.create_task(self.trade_follower.run(), name="feed-trades"),
            asyncio.create_task(self._tick_forever(), name="feed-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop fanning out (open connections stay open until the server closes them)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        tasks, self._tasks = self._tasks, []
        self.writer.stop()
        if not tasks:
            return
        # Cancelling the lean client's blocking XREAD is safe (its late reply is dropped).
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=1)
        await self._resp.aclose()

    # -- connections ------------------------------------------------------------------------------
    def open(self, key_id: str) -> FeedConnection:
        """Register a new subscriber (its session starts with no subscription)."""
        now = _now_ms()
        session = FeedSession(
            self._replica, self._models, self._limits, now, self._cache, self._log
        )
        conn = FeedConnection(session, key_id)
        self._conns.add(conn)
        return conn

    def close(self, conn: FeedConnection) -> None:
        self._conns.discard(conn)
        self._asgi_conns.discard(conn)
        conn.transport = None  # the writer writes nothing more to it
        self._follow_books(conn, frozenset())
        if conn in self._trade_conns:
            self._trade_conns.discard(conn)
            self.trade_follower.want(bool(self._trade_conns))

    def drop_key(self, key_id: str) -> int:
        """End every connection of a revoked key (close 4001); returns how many."""
        found = [c for c in self._conns if c.key_id == key_id]
        for conn in found:
            conn.end(CLOSE_REVOKED)
        return len(found)

    async def serve(self, websocket: WebSocket, key_id: str) -> None:
        """Run one accepted WebSocket until either side ends it."""
        conn = self.open(key_id)
        conn.transport = find_transport(websocket)
        tasks = [
            asyncio.create_task(self._read(websocket, conn)),
            asyncio.create_task(conn.ended.wait()),
        ]
        if conn.transport is None:
            self._asgi_conns.add(conn)
            conn.wake.set()
            tasks.append(asyncio.create_task(self._write(websocket, conn)))
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
            self._follow_books(conn, conn.session.books)
            self._follow_trades_for(conn)
            self._after(conn)

    async def _write(self, websocket: WebSocket, conn: FeedConnection) -> None:
        """The fallback: frames through ASGI, for a server that offers no transport."""
        session, loop = conn.session, asyncio.get_running_loop()
        next_at = 0.0  # batched: when the next frame may go
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                if session.batch_ms is None or not session.has_output or conn.held:
                    await conn.wake.wait()
                if conn.held:
                    conn.wake.clear()
                    continue
                if session.batch_ms is not None:
                    # Waiting with `wake` set keeps the fan-out's set() a no-op; a busy batched
                    # connection then costs one task switch per frame, not one per change.
                    if (delay := next_at - loop.time()) > 0:
                        await asyncio.sleep(delay)
                    next_at = loop.time() + (session.batch_ms or 0) / 1000
                conn.wake.clear()
                # What changed while a send waited is conflated in the outbox, as for a client
                # that lags behind the writer below.
                while True:
                    session.fold()
                    frame = session.next_frame()
                    if frame is None:
                        break
                    await websocket.send_text(frame.decode())

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
            self._notify(conn)

    def _notify(self, conn: FeedConnection) -> None:
        if conn.transport is not None:
            self.writer.mark(conn)
        else:
            conn.wake.set()

    def _follow_books(self, conn: FeedConnection, books: frozenset[str]) -> None:
        """After a command or a close: which books' changes wake `conn`'s writer."""
        for model, followers in list(self._followers.items()):
            if model not in books:
                followers.discard(conn)
                if not followers:
                    del self._followers[model]
        for model in books:
            self._followers.setdefault(model, set()).add(conn)

    # -- the trade stream, only while wanted ------------------------------------------------------
    def _follow_trades_for(self, conn: FeedConnection) -> None:
        """After a command: start or stop following trades as `conn`'s subscription changed."""
        wants, had = conn.session.wants_trades, conn in self._trade_conns
        if wants == had:
            return
        if wants:
            self._trade_conns.add(conn)
            if not self.trade_follower.positioned:
                conn.held = True  # its `subscribed` waits until trades after it will be read
        else:
            self._trade_conns.discard(conn)
        self.trade_follower.want(bool(self._trade_conns))

    def _release_held(self) -> None:
        for conn in self._conns:
            if conn.held:
                conn.held = False
                self._after(conn)

    # -- fan-out ----------------------------------------------------------------------------------
    def _on_change(self, change: BookChange) -> None:
        self.changes += 1
        # Every change of every model passes here: one nobody follows costs no encoding.
        followers = self._followers.get(change.model)
        if not followers:
            return
        wire = WireChange.of(change)
        self._log.append(wire, update_bytes(wire))  # encoded once, read by every session
        self.writer.mark_all(followers)
        for conn in self._asgi_conns & followers:
            conn.wake.set()

    def _on_trade(self, trade: Trade) -> None:
        self.trades += 1
        wire = WireTrade.of(trade)
        for conn in list(self._trade_conns):
            conn.session.on_trade(wire)
            self._after(conn)

    def _on_missed(self, missed: int) -> None:
        self.trades_missed += missed
        log.warning(
            "feed: %d trades were trimmed from the stream before this process read them", missed
        )
        for conn in list(self._trade_conns):
            conn.session.on_trades_missed(missed)
            self._after(conn)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            now = _now_ms()
            for conn in list(self._conns):
                conn.session.tick(now)
                self._after(conn)
            self._trim_log()

    def _trim_log(self) -> None:
        """Forget the changes every session has read; a session far behind has its share folded."""
        log = self._log
        for conn in self._conns:
            if log.end - conn.session.cursor > self.max_log_behind:
                conn.session.fold()  # it is not writing: its updates wait conflated
        log.trim(min((conn.session.cursor for conn in self._conns), default=log.end))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
