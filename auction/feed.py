"""The sans-I/O price-feed session: client commands and market events in, numbered messages out.

One `FeedSession` per WebSocket. The shell feeds it the client's frames (`receive`), trades
(`on_trade`) and the clock (`tick`), and drains `next_parts()` (or `next_message()`,
`next_frame()`) into the socket whenever the socket can take more. Book changes reach it one of
two ways: through a `ChangeLog` shared by every session of the process (the hub appends each
change once; the session reads the log from its own cursor when it drains, so a session that
keeps up costs nothing per change until its frames are written), or pushed one by one with
`on_change`. Nothing here blocks or does I/O.

Why the outbox is not a plain queue: a client that reads slower than the market moves must not
slow the market down or grow memory without bound. So while messages wait (the client lags, and
the shell has called `fold()` to move the unread part of the log into the outbox):
- book updates are conflated, one pending update per (model, offer ref) holding the latest state
  (a withdrawn offer stays withdrawn: a later capacity notice for it is dropped);
- a book snapshot waits as a marker and is built from the replica when it is sent, so changes to
  that model in the meantime need no update at all;
- trades, acknowledgements and errors cannot be conflated: past `max_pending` of them the session
  closes with 4008 and the client may reconnect and resubscribe for a fresh snapshot.
`seq` is given when a message leaves the outbox, so it rises by exactly 1 per message sent
whatever was conflated; a gap the client sees always means a lost message. Messages leave in the
order their events happened: each outbox entry is stamped with the log's end when queued, and
log entries before a stamp go before that entry.

A client may opt into batched frames (`"batch_ms"` in a subscribe): the shell then drains the
outbox at most every `batch_ms` with `next_frame()`, one JSON array per frame.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from auction.feed_outbox import (
    HEARTBEAT_HEAD,
    SNAPSHOT_HEAD,
    TRADE_HEAD,
    UPDATE_HEAD,
    BookView,
    ChangeLog,
    HeartbeatMark,
    Item,
    PendingUpdate,
    SnapshotCache,
    SnapshotMark,
    SnapshotReason,
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

CLOSE_SLOW_CONSUMER = 4008
CLOSE_INVALID_KEY = 4001
BATCH_MS_RANGE = (10, 250)  # a subscribe's `batch_ms`: 0 (off) or within this, inclusive
_UPDATE_HEAD_SIZE = len(UPDATE_HEAD)
_WAITING = 1 << 62  # a model's log position while its snapshot waits: nothing of the log is sent


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """Per-connection limits (the hub fills them from settings)."""

    max_pending: int = 1_000  # trades, acks and errors waiting to be sent, before 4008
    heartbeat_ms: int = 2_500  # the interface promises one at least every 5 s
    max_message_bytes: int = 16_384  # a client frame
    max_models: int = 1_000  # models named in one subscribe
    max_frame_chars: int = 1 << 20  # a batched frame stops growing past this many bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over: the shell closes the socket with this code and reason."""

    code: int
    reason: str


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


class FeedSession:
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
        self._cache = cache or SnapshotCache(view)
        self._log = log or ChangeLog()
        self._cursor = self._log.end  # the next log position to read
        self._known = frozenset(models)
        self._limits = limits
        self._queue: deque[tuple[int, Item]] = deque()  # (stamp: the log's end then, item)
        self._updates: dict[str, dict[str, PendingUpdate]] = {}  # model -> ref -> pending
        self._snapshots: dict[str, SnapshotMark] = {}
        self._from: dict[str, int] = {}  # followed model -> first log position to send
        self._book: set[str] = set()
        self._trades: set[str] = set()
        self._bounded = 0  # trades, acks and errors in the queue
        self._heartbeat_queued = False
        self._next_heartbeat_ms = now_ms + limits.heartbeat_ms
        self.seq = 0  # the last seq sent
        self.batch_ms: int | None = None  # None: one message per frame
        self.conflated = 0  # book updates merged into one still waiting
        self.close: Close | None = None

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

    def _queue_change(self, change: WireChange, raw: bytes | None, stamp: int) -> bool:
        model = change.model
        if change.kind == "resync":
            self._mark_snapshot(model, "resync", stamp)
            return True
        if model in self._snapshots:
            return False  # the snapshot waiting to be sent is built later: it holds this change
        by_ref = self._updates.get(model)
        if by_ref is None:
            by_ref = self._updates[model] = {}
        pending = by_ref.get(change.ref)
        if pending is None:
            by_ref[change.ref] = pending = PendingUpdate(change, raw)
            self._queue.append((stamp, pending))
            return True
        pending.merge(change)
        self.conflated += 1
        return False

    def fold(self) -> None:
        """The client lags: move the log's unread changes into the outbox, to be conflated."""
        log, end = self._log, self._log.end
        if self._cursor >= end or self.close is not None:
            self._cursor = end
            return
        old, self._queue = self._queue, deque()
        entries, base, start_of = log.entries, log.base, self._from
        for position in range(self._cursor, end):
            while old and old[0][0] <= position:  # queued before this change
                self._queue.append(old.popleft())
            change, raw = entries[position - base]
            start = start_of.get(change.model)
            if start is not None and position >= start:
                self._queue_change(change, raw, position)
        self._queue.extend(old)
        self._cursor = end

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

    # -- out --------------------------------------------------------------------------------------
    @property
    def has_output(self) -> bool:
        """Whether something may wait (log entries of models it does not follow count too)."""
        return self.close is None and (bool(self._queue) or self._cursor < self._log.end)

    @property
    def pending(self) -> int:
        """Messages waiting (an upper bound: superseded entries are skipped when reached)."""
        return len(self._queue) + self._log.end - self._cursor

    @property
    def cursor(self) -> int:
        """The next position of the shared log this session reads."""
        return self._cursor

    def next_parts(self) -> tuple[bytes, bytes, bytes] | None:
        """The next message as three pieces to join (head, seq, rest), or None when none waits.

        The rest of an update is shared by every session that keeps up: a writer that frames
        the pieces itself copies it once.
        """
        queue, updates = self._queue, self._updates
        while True:
            if self._cursor < self._log.end:
                logged = self._next_logged(queue[0][0] if queue else self._log.end)
                if logged is not None:
                    return logged
            if not queue:
                return None
            item = queue.popleft()[1]
            if type(item) is PendingUpdate:
                change = item.change
                by_ref = updates.get(change.model)
                if by_ref is None or by_ref.get(change.ref) is not item:
                    continue  # superseded by a snapshot or an unsubscribe
                del by_ref[change.ref]
                self.seq += 1
                return UPDATE_HEAD, str(self.seq).encode(), item.rest()
            rest = self._rest(item)
            if rest is not None:
                self.seq += 1
                return rest[0], str(self.seq).encode(), rest[1]

    def _next_logged(self, limit: int) -> tuple[bytes, bytes, bytes] | None:
        """The next update from the log before position `limit` that this session follows."""
        log, start_of, cursor = self._log, self._from, self._cursor
        entries, base = log.entries, log.base
        while cursor < limit:
            change, raw = entries[cursor - base]
            start = start_of.get(change.model)
            cursor += 1
            if start is None or cursor <= start:
                continue  # a model it does not follow, or one its snapshot holds
            self._cursor = cursor
            self.seq += 1
            if change.kind == "resync":  # the replica reloaded the model: a snapshot now
                self._drop_pending(change.model)
                return SNAPSHOT_HEAD, str(self.seq).encode(), self._snapshot(change.model, "resync")
            return UPDATE_HEAD, str(self.seq).encode(), raw
        self._cursor = cursor
        return None

    def write_frames(self, out: list[bytes], room: int, header: Callable[[int], bytes]) -> int:
        """Append waiting messages to `out`, each as `header(size)` and its pieces.

        Stops when nothing waits or `room` bytes are used (after one message at least); returns
        the messages added. The writer's loop, for one message per frame: updates from the log
        (the common case) are framed here without a call per message.
        """
        log, queue, start_of = self._log, self._queue, self._from
        entries, base = log.entries, log.base
        end, added = base + len(entries), 0
        while room > 0:
            limit = queue[0][0] if queue else end
            cursor, seq = self._cursor, self.seq
            while cursor < limit and room > 0:
                change, raw = entries[cursor - base]
                start = start_of.get(change.model)
                if start is None or cursor < start:
                    cursor += 1
                    continue  # a model it does not follow, or one its snapshot holds
                if change.kind == "resync":
                    break  # a snapshot: next_parts builds it
                cursor += 1
                seq += 1
                number = str(seq).encode()
                size = _UPDATE_HEAD_SIZE + len(number) + len(raw)
                out += (header(size), UPDATE_HEAD, number, raw)
                room -= size
                added += 1
            self._cursor, self.seq = cursor, seq
            if room <= 0:
                break
            if cursor >= limit and not queue:
                break  # the log is read to its end and nothing else waits
            message = self.next_parts()
            if message is None:
                break
            size = len(message[0]) + len(message[1]) + len(message[2])
            out += (header(size), *message)
            room -= size
            added += 1
        return added

    def next_payload(self) -> bytes | None:
        """The next message (UTF-8 JSON) with its seq, or None when nothing waits."""
        parts = self.next_parts()
        return None if parts is None else b"".join(parts)

    def next_message(self) -> str | None:
        """`next_payload` as text."""
        payload = self.next_payload()
        return None if payload is None else payload.decode()

    def next_frame(self) -> bytes | None:
        """The next frame: one message, or with `batch_ms` a JSON array of all that wait."""
        if self.batch_ms is None:
            return self.next_payload()
        if self._log_repeats():
            self.fold()  # at most one update per offer per frame, with the latest state
        parts: list[bytes] = []
        size, limit = 0, self._limits.max_frame_chars
        while size < limit and (message := self.next_parts()) is not None:
            if parts:
                parts.append(b",")
            parts += message
            size += len(message[0]) + len(message[1]) + len(message[2]) + 1
        return b"".join((b"[", *parts, b"]")) if parts else None

    def _log_repeats(self) -> bool:
        """Whether the unread log names an offer twice: then a frame folds it first."""
        log = self._log
        unread = log.entries[self._cursor - log.base :]
        return len({(change.model, change.ref) for change, _ in unread}) < len(unread)

    def _rest(self, item: Item) -> tuple[bytes, bytes] | None:
        if isinstance(item, PendingUpdate):
            by_ref = self._updates.get(item.change.model)
            if by_ref is None or by_ref.get(item.change.ref) is not item:
                return None  # superseded by a snapshot or an unsubscribe
            del by_ref[item.change.ref]
            return UPDATE_HEAD, item.rest()
        if isinstance(item, SnapshotMark):
            if self._snapshots.get(item.model) is not item:
                return None
            del self._snapshots[item.model]
            return SNAPSHOT_HEAD, self._snapshot(item.model, item.reason)
        if isinstance(item, HeartbeatMark):
            self._heartbeat_queued = False
            return HEARTBEAT_HEAD, b',"ts":%d}' % item.ts
        self._bounded -= 1
        return item.head, item.rest

    def _snapshot(self, model: str, reason: SnapshotReason) -> bytes:
        """A snapshot built now: it holds every change logged so far, so the log goes on after."""
        self._from[model] = self._log.end
        return SnapshotMark(model, reason).head() + self._cache.body(model)

    # -- helpers ----------------------------------------------------------------------------------
    def _push(self, item: Text) -> None:
        self._bounded += 1
        if self._bounded > self._limits.max_pending:
            self._fail(f"slow consumer: more than {self._limits.max_pending} messages waiting")
            return
        self._queue.append((self._log.end, item))

    def _mark_snapshot(self, model: str, reason: SnapshotReason, stamp: int) -> None:
        self._drop_pending(model)
        self._snapshots[model] = mark = SnapshotMark(model, reason)
        self._from[model] = _WAITING
        self._queue.append((stamp, mark))

    def _drop_pending(self, model: str) -> None:
        self._snapshots.pop(model, None)
        self._updates.pop(model, None)

    def _fail(self, reason: str) -> None:
        self.close = Close(CLOSE_SLOW_CONSUMER, reason)
        self._queue.clear()
        self._updates.clear()
        self._snapshots.clear()
        self._from.clear()
        self._cursor = self._log.end
        self._bounded = 0
