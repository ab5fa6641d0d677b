"""A feed session's outbox: what waits for a client, conflated while it lags, numbered when sent.

`SessionOutbox` is the part of a `FeedSession` (in `auction.feed`) that holds and drains what is
to be sent; the session adds the subscriptions and the events that fill it. Book changes come
from a `ChangeLog` shared by every session of the process, read from the session's own cursor
when it drains, or are queued one by one (`_queue_change`). Nothing here blocks or does I/O.

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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from auction.feed_outbox import (
    HEARTBEAT_HEAD,
    SNAPSHOT_HEAD,
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
)
from auction.feed_wire import WireChange

__all__ = ["CLOSE_SLOW_CONSUMER", "Close", "FeedLimits", "SessionOutbox"]

CLOSE_SLOW_CONSUMER = 4008
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


class SessionOutbox:
    """One connection's outbox over the shared log: conflation, seq, and draining into frames.

    Args:
        view: the replica, read when a snapshot is sent.
        limits: the per-connection limits.
        cache: snapshot bodies shared by the process's sessions.
        log: the book changes shared by the process's sessions, read from its end on; None:
            changes come only as the session queues them (`_queue_change`).
    """

    def __init__(
        self,
        view: BookView,
        limits: FeedLimits,
        cache: SnapshotCache | None = None,
        log: ChangeLog | None = None,
    ) -> None:
        self._cache = cache or SnapshotCache(view)
        self._log = log or ChangeLog()
        self._cursor = self._log.end  # the next log position to read
        self._limits = limits
        self._queue: deque[tuple[int, Item]] = deque()  # (stamp: the log's end then, item)
        self._updates: dict[str, dict[str, PendingUpdate]] = {}  # model -> ref -> pending
        self._snapshots: dict[str, SnapshotMark] = {}
        self._from: dict[str, int] = {}  # followed model -> first log position to send
        self._bounded = 0  # trades, acks and errors in the queue
        self._heartbeat_queued = False
        self.seq = 0  # the last seq sent
        self.batch_ms: int | None = None  # None: one message per frame
        self.conflated = 0  # book updates merged into one still waiting
        self.close: Close | None = None

    # -- conflation -------------------------------------------------------------------------------
    def _queue_change(self, change: WireChange, raw: bytes | None, stamp: int) -> bool:
        """Queue a book change stamped `stamp`, or merge it into the update already waiting.

        Returns True when a message was queued (a merge into a waiting one is not).
        """
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
