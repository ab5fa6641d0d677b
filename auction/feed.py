"""The sans-I/O price-feed session: client commands and market events in, numbered messages out.

One `FeedSession` per WebSocket. The shell feeds it the client's frames (`receive`), trades
(`on_trade`) and the clock (`tick`), and drains `next_parts()` (or `next_message()`,
`next_frame()`) into the socket whenever the socket can take more. Book changes reach it one of
two ways: through a `ChangeLog` shared by every session of the process (the hub appends each
change once; the session reads the log from its own cursor when it drains, so a session that
keeps up costs nothing per change until its frames are written), or pushed one by one with
`on_change`. Nothing here blocks or does I/O.

This module holds the subscriptions and the events in; what waits to be sent, its conflation
while the client lags, `seq` and the draining are the `SessionOutbox` the session extends
(`auction.feed_drain`).

A client may opt into batched frames (`"batch_ms"` in a subscribe): the shell then drains the
outbox at most every `batch_ms` with `next_frame()`, one JSON array per frame.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from auction.feed_drain import CLOSE_SLOW_CONSUMER, Close, FeedLimits, SessionOutbox
from auction.feed_outbox import (
    TRADE_HEAD,
    BookView,
    ChangeLog,
    HeartbeatMark,
    SnapshotCache,
    Text,
    update_bytes,
    update_text,
)
from auction.feed_wire import BadCommand, Command, Trade, WireChange, WireTrade, parse_command

__all__ = [
    "BATCH_MS_RANGE",
    "CLOSE_INVALID_KEY",
    "CLOSE_SLOW_CONSUMER",
    "BookView",
    "ChangeLog",
    "Close",
    "FeedLimits",
    "FeedSession",
    "SnapshotCache",
    "Trade",
    "update_bytes",
    "update_text",
]

CLOSE_INVALID_KEY = 4001
BATCH_MS_RANGE = (10, 250)  # a subscribe's `batch_ms`: 0 (off) or within this, inclusive


def _batch_ms(data: str | bytes) -> int | None:
    """A valid subscribe's `batch_ms`: None when left out, 0 to turn batching off.

    Raises:
        ValueError: it is not 0 or an integer within `BATCH_MS_RANGE`.
    """
    message = json.loads(data)  # parse_command has checked it is a JSON object
    if "batch_ms" not in message:
        return None
    raw, (low, high) = message["batch_ms"], BATCH_MS_RANGE
    if isinstance(raw, bool) or not isinstance(raw, int) or not (raw == 0 or low <= raw <= high):
        raise ValueError(f"batch_ms must be 0 (off) or an integer from {low} to {high}")
    return raw


class FeedSession(SessionOutbox):
    """One client connection's subscriptions and outbox.

    Args:
        view: the replica, read when a snapshot is sent.
        models: the catalogue's model ids (what "*" means; anything else is unknown).
        limits: the per-connection limits.
        now_ms: the clock at connect; heartbeats are due every `limits.heartbeat_ms` after it.
        cache: snapshot bodies shared by the process's sessions.
        log: the book changes shared by the process's sessions, read from its end on; None:
            changes come only through `on_change`.
    """

    def __init__(
        self,
        view: BookView,
        models: Collection[str],
        limits: FeedLimits,
        now_ms: int,
        cache: SnapshotCache | None = None,
        log: ChangeLog | None = None,
    ) -> None:
        super().__init__(view, limits, cache, log)
        self._known = frozenset(models)
        self._book: set[str] = set()
        self._trades: set[str] = set()
        self._next_heartbeat_ms = now_ms + limits.heartbeat_ms

    # -- in ---------------------------------------------------------------------------------------
    def receive(self, data: str | bytes) -> None:
        """A frame from the client: act on it, or queue an `error` (the session goes on)."""
        if self.close is not None:
            return
        try:
            command = parse_command(
                data,
                self._known,
                max_bytes=self._limits.max_message_bytes,
                max_models=self._limits.max_models,
            )
        except BadCommand as exc:
            self._push(Text.of("error", {"code": exc.code, "message": exc.message}))
            return
        if command.action == "unsubscribe":
            self._unsubscribe(command)
            return
        try:
            batch_ms = _batch_ms(data)
        except ValueError as exc:  # nothing of the message is applied
            self._push(Text.of("error", {"code": "invalid_batch_ms", "message": str(exc)}))
            return
        self._subscribe(command, batch_ms)

    def _subscribe(self, command: Command, batch_ms: int | None) -> None:
        echo = command.echo()
        if batch_ms is not None:
            echo["batch_ms"] = batch_ms
            self.batch_ms = batch_ms or None
        self._push(Text.of("subscribed", echo))
        if "trades" in command.channels:
            self._trades |= command.models
        if "book" in command.channels:
            self._book |= command.models
            for model in sorted(command.models):  # a resubscribe is a fresh snapshot
                self._mark_snapshot(model, "subscribe", self._log.end)

    def _unsubscribe(self, command: Command) -> None:
        if "trades" in command.channels:
            self._trades -= command.models
        if "book" in command.channels:
            self._book -= command.models
            for model in command.models:
                self._drop_pending(model)
                self._from.pop(model, None)
        self._push(Text.of("unsubscribed", command.echo()))

    @property
    def books(self) -> frozenset[str]:
        """The models whose book the session follows (none once it is closed)."""
        return frozenset(self._book) if self.close is None else frozenset()

    def follows(self, model: str) -> bool:
        """Whether a change to `model` could reach this session (it subscribes to its book)."""
        return model in self._book and self.close is None

    @property
    def wants_trades(self) -> bool:
        """Whether the session subscribes to the trades of any model."""
        return bool(self._trades) and self.close is None

    def on_change(self, change: WireChange, raw: bytes | None = None) -> bool:
        """A change pushed straight into the outbox (without a shared log), conflated there.

        `raw` is `update_bytes(change)`, when the caller built it once for every session.
        Returns True when a message was queued (a merge into a waiting one is not).
        """
        if change.model not in self._book or self.close is not None:
            return False
        return self._queue_change(change, raw, self._log.end)

    def on_trade(self, trade: WireTrade) -> None:
        if self.close is None and trade.model in self._trades:
            self._push(Text(TRADE_HEAD, trade.raw))

    def on_trades_missed(self, missed: int) -> None:
        """The hub found `missed` trades gone from the stream before it could read them."""
        if self.close is None and self._trades:
            fields = {"channel": "trades", "reason": "trades_missed", "missed": missed}
            self._push(Text.of("resync", fields))

    def tick(self, now_ms: int) -> None:
        """The clock: queue a heartbeat when one is due (at most one waits at a time)."""
        if self.close is not None or now_ms < self._next_heartbeat_ms:
            return
        self._next_heartbeat_ms = now_ms + self._limits.heartbeat_ms
        if not self._heartbeat_queued:
            self._heartbeat_queued = True
            self._queue.append((self._log.end, HeartbeatMark(now_ms)))
