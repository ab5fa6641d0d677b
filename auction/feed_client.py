"""A Python client for the price feed: a local book per model, trades, gap recovery, reconnects.

    async with FeedClient("ws://127.0.0.1:8000/v1/feed", api_key) as feed:
        await feed.wait_until(lambda f: f.synced(), timeout=5)
        print(feed.books["gpt-4o"].best_input())
        async for trade in feed.trades():
            ...

Every server message carries a `seq` one above the last. A jump means a message was lost, so
the client resubscribes to the book (the server answers with fresh snapshots) and counts the gap;
trades lost that way cannot be fetched again. A dropped connection, a 4008 (too slow) or a
silence longer than `stale_after_s` (heartbeats come every few seconds) reconnects with jittered
exponential backoff and resubscribes; a refused key (HTTP 401 or close 4001) stops the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from auction.feed_wire import Trade

log = logging.getLogger(__name__)

Message = dict[str, Any]
"""A feed message as parsed from JSON (its shape per type is in docs/feed.md)."""
CLOSE_INVALID_KEY = 4001


class FeedAuthError(Exception):
    """The server refused the API key (HTTP 401 before the upgrade, or close 4001)."""


@dataclass
class LocalBook:
    """One model's live offers as the feed described them: ref -> OFFER wire form.

    Each offer dict also holds `in_flight` and `tokens_this_minute`. `synced` is False from a
    gap or reconnect until the next snapshot of the model.
    """

    model: str
    offers: dict[str, Message] = field(default_factory=dict)
    synced: bool = True

    def best_input(self) -> Decimal | None:
        """The lowest input ask, in USD per million tokens."""
        return min((Decimal(o["input_usd_per_mtok"]) for o in self.offers.values()), default=None)

    def best_output(self) -> Decimal | None:
        """The lowest output ask, in USD per million tokens."""
        return min((Decimal(o["output_usd_per_mtok"]) for o in self.offers.values()), default=None)

    def apply(self, update: Mapping[str, Any]) -> None:
        """Apply one `update` message."""
        ref, kind = update["ref"], update["kind"]
        if kind in ("withdrawn", "expired", "cancelled"):
            self.offers.pop(ref, None)
            return
        offer = update.get("offer")
        if offer is not None:
            old = self.offers.get(ref, {})
            offer.setdefault("in_flight", old.get("in_flight", 0))
            offer.setdefault("tokens_this_minute", old.get("tokens_this_minute", 0))
            self.offers[ref] = offer
        current = self.offers.get(ref)
        if current is not None:
            for name in ("in_flight", "tokens_this_minute"):
                if name in update:
                    current[name] = update[name]


@dataclass
class FeedStats:
    """What happened so far, for status lines and tests."""

    connects: int = 0
    snapshots: int = 0
    updates: int = 0
    trades: int = 0
    trades_dropped: int = 0  # trades() not read fast enough: the oldest went
    trades_missed: int = 0  # the server said trades were lost before it could send them
    heartbeats: int = 0
    gaps: int = 0
    resubscribes: int = 0
    errors: list[Message] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)


class FeedClient:
    """Follow the feed until `stop()`; see the module docstring.

    Args:
        url: the feed's WebSocket URL, `ws://host:port/v1/feed`.
        api_key: the client API key (sent as `Authorization: Bearer`).
        channels, models: what to subscribe to (`["*"]` is every model).
        backoff_s: the first and the longest wait between reconnects.
        stale_after_s: silence after which the connection is taken for dead.
        on_message: called with every message after the local state took it in.
        max_trades: trades kept for `trades()` before the oldest are dropped.
        batch_ms: ask the server for batched frames, at most one every `batch_ms` (10 to 250),
            each a JSON array of messages: fewer frames to read for a busy book, for up to
            `batch_ms` more delay. None: one message per frame.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        channels: Sequence[str] = ("book", "trades"),
        models: Sequence[str] = ("*",),
        backoff_s: tuple[float, float] = (0.1, 5.0),
        stale_after_s: float = 10.0,
        on_message: Callable[[Message], None] | None = None,
        max_trades: int = 10_000,
        batch_ms: int | None = None,
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._channels = list(channels)
        self._models = list(models)
        self._backoff = backoff_s
        self._stale_after_s = stale_after_s
        self._on_message = on_message
        self._batch_ms = batch_ms
        self._trades: asyncio.Queue[Trade] = asyncio.Queue(max_trades)
        self._changed = asyncio.Condition()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._expected_seq = 1
        self._resubscribing = False
        self._received = 0
        self.books: dict[str, LocalBook] = {}
        self.stats = FeedStats()
        self.connected = False
        self.error: FeedAuthError | None = None  # set when the client gave up

    async def __aenter__(self) -> FeedClient:
        self._task = asyncio.create_task(self.run(), name="feed-client")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, FeedAuthError):
                await task

    def synced(self, models: Sequence[str] | None = None) -> bool:
        """Connected, and a snapshot since the last gap for `models` (every book if None)."""
        names = self.books.keys() if models is None else models
        books = [self.books.get(m) for m in names]
        return self.connected and bool(books) and all(b is not None and b.synced for b in books)

    async def wait_until(self, predicate: Callable[[FeedClient], bool], timeout: float) -> None:
        """Wait until `predicate(self)` holds, checked after every message.

        Raises:
            TimeoutError: it did not hold within `timeout` seconds.
            FeedAuthError: the server refused the key (the client has stopped).
        """
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.error is not None or predicate(self))
        if self.error is not None:
            raise self.error

    async def trades(self) -> AsyncIterator[Trade]:
        """Trades as they arrive (the iterator never ends by itself)."""
        while True:
            yield await self._trades.get()

    # -- the connection ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, follow, and reconnect with backoff until cancelled.

        Raises:
            FeedAuthError: the server refused the key.
        """
        delay = self._backoff[0]
        while True:
            try:
                healthy = await self._session()
            except FeedAuthError as exc:
                self.error = exc
                async with self._changed:
                    self._changed.notify_all()
                raise
            delay = self._backoff[0] if healthy else min(delay * 2, self._backoff[1])
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self) -> bool:
        """One connection; True if the server sent at least one message on it."""
        self._received = 0
        try:
            async with connect(
                self._url,
                additional_headers=self._headers,
                compression=None,  # the feed is many small frames: CPU matters more than bytes
                max_size=64 * 2**20,
                open_timeout=10,
                close_timeout=2,
            ) as ws:
                await self._follow(ws)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise FeedAuthError((exc.response.body or b"").decode(errors="replace")) from None
            log.warning("feed: upgrade refused with HTTP %d", exc.response.status_code)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            self.stats.close_codes.append(code)
            if code == CLOSE_INVALID_KEY:
                raise FeedAuthError(exc.rcvd.reason if exc.rcvd else "") from None
            log.info("feed: connection closed (%d); reconnecting", code)
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.info("feed: connection failed (%s); reconnecting", exc)
        finally:
            self._ws = None
            self.connected = False
        return self._received > 0

    async def _follow(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.connected = True
        self.stats.connects += 1
        self._expected_seq = 1
        self._resubscribing = False
        for book in self.books.values():
            book.synced = False
        subscribe: Message = {"type": "subscribe", "channels": self._channels}
        subscribe["models"] = self._models
        if self._batch_ms is not None:
            subscribe["batch_ms"] = self._batch_ms
        await self._send(subscribe)
        while True:
            async with asyncio.timeout(self._stale_after_s):
                raw = await ws.recv()
            frame = json.loads(raw)  # one message, or a batch: an array of them
            for message in frame if isinstance(frame, list) else [frame]:
                if isinstance(message, dict):
                    await self._handle(message)

    async def _send(self, message: Message) -> None:
        if self._ws is not None:
            await self._ws.send(json.dumps(message))

    async def resubscribe(self) -> None:
        """Ask for fresh book snapshots (done by itself after a gap)."""
        if "book" not in self._channels or self._resubscribing:
            return
        self._resubscribing = True
        self.stats.resubscribes += 1
        for book in self.books.values():
            book.synced = False
        await self._send({"type": "subscribe", "channels": ["book"], "models": self._models})

    # -- messages ---------------------------------------------------------------------------------
    async def _handle(self, message: Message) -> None:
        self._received += 1
        seq = message.get("seq")
        if isinstance(seq, int):
            if seq != self._expected_seq:
                self.stats.gaps += 1
                log.warning("feed: seq gap (expected %d, got %d)", self._expected_seq, seq)
                await self.resubscribe()
            self._expected_seq = seq + 1
        self._apply(message)
        if self._on_message is not None:
            self._on_message(message)
        async with self._changed:
            self._changed.notify_all()

    def _apply(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "snapshot":
            offers = {_ref(o): o for o in cast(list[Message], message["offers"])}
            self.books[message["model"]] = LocalBook(message["model"], offers)
            self.stats.snapshots += 1
        elif kind == "update":
            book = self.books.setdefault(
                message["model"], LocalBook(message["model"], synced=False)
            )
            book.apply(message)
            self.stats.updates += 1
        elif kind == "trade":
            self._keep_trade(Trade.from_json(message))
        elif kind == "heartbeat":
            self.stats.heartbeats += 1
        elif kind == "subscribed":
            self._resubscribing = False
        elif kind == "resync":
            self.stats.trades_missed += int(message.get("missed", 0))
        elif kind == "error":
            self.stats.errors.append(message)
            log.warning("feed: server error %s: %s", message.get("code"), message.get("message"))

    def _keep_trade(self, trade: Trade) -> None:
        self.stats.trades += 1
        if self._trades.full():
            self._trades.get_nowait()
            self.stats.trades_dropped += 1
        self._trades.put_nowait(trade)


def _ref(offer: Mapping[str, Any]) -> str:
    return f"{offer['provider']}/{offer['offer_id']}"
