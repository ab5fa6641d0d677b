"""The sans-I/O price-feed session: client commands and market events in, numbered messages out.

One `FeedSession` per WebSocket. The shell feeds it the client's frames (`receive`), the book's
changes (`on_change`), trades (`on_trade`) and the clock (`tick`), and drains `next_message()`
into the socket whenever the socket can take more. Nothing here blocks or does I/O.

Why the outbox is not a plain queue: a client that reads slower than the market moves must not
slow the market down or grow memory without bound. So while messages wait (the client lags):
- book updates are conflated, one pending update per (model, offer ref) holding the latest state
  (a withdrawn offer stays withdrawn: a later capacity notice for it is dropped);
- a book snapshot waits as a marker and is built from the replica when it is sent, so changes to
  that model in the meantime need no update at all;
- trades, acknowledgements and errors cannot be conflated: past `max_pending` of them the session
  closes with 4008 and the client may reconnect and resubscribe for a fresh snapshot.
`seq` is given when a message leaves the outbox, so it rises by exactly 1 per message sent
whatever was conflated; a gap the client sees always means a lost message.

A client may opt into batched frames (`"batch_ms"` in a subscribe): the shell then drains the
outbox at most every `batch_ms` with `next_frame()`, one JSON array per frame. A WebSocket frame
costs the server far more than the feed's own work per message, so this is what lets one
process serve a thousand subscribers of a busy book.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from auction.book_stream import REMOVALS
from auction.feed_wire import (
    BadCommand,
    Command,
    Trade,
    WireChange,
    WireTrade,
    dumps,
    parse_command,
    rest_of,
)
from auction.offer_codec import offer_to_json
from clearing.index import BookIndex
from clearing.money import format_price
from clearing.types import OfferLive

__all__ = [
    "BATCH_MS_RANGE",
    "CLOSE_INVALID_KEY",
    "CLOSE_SLOW_CONSUMER",
    "Close",
    "FeedLimits",
    "FeedSession",
    "Trade",
    "update_text",
]

CLOSE_SLOW_CONSUMER = 4008
CLOSE_INVALID_KEY = 4001
SnapshotReason = Literal["subscribe", "resync"]
BATCH_MS_RANGE = (10, 250)  # a subscribe's `batch_ms`: 0 (off) or within this, inclusive


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """Per-connection limits (the hub fills them from settings)."""

    max_pending: int = 1_000  # trades, acks and errors waiting to be sent, before 4008
    heartbeat_ms: int = 2_500  # the interface promises one at least every 5 s
    max_message_bytes: int = 16_384  # a client frame
    max_models: int = 1_000  # models named in one subscribe
    max_frame_chars: int = 1 << 20  # a batched frame stops growing past this (one message at least)


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over: the shell closes the socket with this code and reason."""

    code: int
    reason: str


class BookView(Protocol):
    """What a session reads to build snapshots: the replica's index, live state and versions."""

    @property
    def index(self) -> BookIndex: ...

    @property
    def live(self) -> Mapping[str, OfferLive]: ...

    def version(self, model: str) -> int: ...


class SnapshotCache:
    """Snapshot bodies by model, reused while the model's book version is unchanged.

    Many sessions subscribing at once (a reconnect storm) serialize each book once.
    """

    def __init__(self, view: BookView) -> None:
        self._view = view
        self._bodies: dict[str, tuple[int, str]] = {}

    def body(self, model: str) -> str:
        """The snapshot's text from `,"offers"` to the closing brace."""
        version = self._view.version(model)
        cached = self._bodies.get(model)
        if cached is not None and cached[0] == version:
            return cached[1]
        text = rest_of(_snapshot_fields(self._view, model))
        self._bodies[model] = (version, text)
        return text


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


def _snapshot_fields(view: BookView, model: str) -> dict[str, object]:
    offers: list[dict[str, object]] = []
    for offer in view.index.offers(model):
        live = view.live.get(offer.ref, OfferLive())
        wire = offer_to_json(offer)
        wire["in_flight"] = live.in_flight
        wire["tokens_this_minute"] = live.tokens_this_minute
        offers.append(wire)
    best: dict[str, str] | None = None
    books = view.index.books(model)
    if books:  # the lowest asks, which may be two different offers
        best = {
            "input_usd_per_mtok": format_price(books[0].by_input[0][0]),
            "output_usd_per_mtok": format_price(books[0].by_output[0][0]),
        }
    return {"offers": offers, "best": best}


def update_text(change: WireChange) -> str:
    """An `update` message's text after its seq: built once per change, shared by sessions."""
    return _update_text(
        change.kind, change.head, change.offer_json, change.in_flight, change.tokens, change.ts
    )


def _update_text(
    kind: str, head: str, offer: str | None, in_flight: int | None, tokens: int | None, ts: int
) -> str:
    parts = [f',"kind":"{kind}"', head]
    if offer is not None:
        parts.append(f',"offer":{offer}')
    if in_flight is not None:
        parts.append(f',"in_flight":{in_flight}')
    if tokens is not None:
        parts.append(f',"tokens_this_minute":{tokens}')
    parts.append(f',"ts":{ts}}}')
    return "".join(parts)


class _Update:
    """A book update waiting to be sent; later changes to the same offer merge into it.

    Until a merge it is just the change and its shared text (a session keeping up merges none).
    """

    __slots__ = ("change", "in_flight", "kind", "merged", "offer_json", "text", "tokens", "ts")

    def __init__(self, change: WireChange, text: str | None) -> None:
        self.change = change  # the first change: model, ref and their escaped `head`
        self.text = text
        self.merged = False

    def merge(self, later: WireChange) -> None:
        if not self.merged:
            first, self.merged, self.text = self.change, True, None
            self.kind, self.offer_json = first.kind, first.offer_json
            self.in_flight, self.tokens = first.in_flight, first.tokens
        if later.kind in REMOVALS:
            self.kind, self.offer_json, self.in_flight, self.tokens = later.kind, None, None, None
        elif later.offer_json is not None:  # new or changed: the latest offer wins
            self.kind = "new" if self.kind == "new" or self.kind in REMOVALS else "changed"
            self.offer_json = later.offer_json
            if later.in_flight is not None:
                self.in_flight = later.in_flight
        elif self.kind not in REMOVALS:  # capacity; for a removed offer it is dropped
            self.in_flight, self.tokens = later.in_flight, later.tokens
        self.ts = later.ts

    def rest(self) -> str:
        if not self.merged:
            return self.text if self.text is not None else update_text(self.change)
        head = self.change.head
        return _update_text(self.kind, head, self.offer_json, self.in_flight, self.tokens, self.ts)


@dataclass(frozen=True, slots=True)
class _Text:
    """A finished message but for its seq: type and the text after the seq."""

    type: str
    rest: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    model: str
    reason: SnapshotReason


@dataclass(frozen=True, slots=True)
class _Heartbeat:
    ts: int


_Item = _Update | _Snapshot | _Text | _Heartbeat


class FeedSession:
    """One client connection's subscriptions and outbox.

    Args:
        view: the replica, read when a snapshot is sent.
        models: the catalogue's model ids (what "*" means; anything else is unknown).
        limits: the per-connection limits.
        now_ms: the clock at connect; heartbeats are due every `limits.heartbeat_ms` after it.
        cache: snapshot bodies shared by the process's sessions.
    """

    def __init__(
        self,
        view: BookView,
        models: Collection[str],
        limits: FeedLimits,
        now_ms: int,
        cache: SnapshotCache | None = None,
    ) -> None:
        self._cache = cache or SnapshotCache(view)
        self._known = frozenset(models)
        self._limits = limits
        self._queue: deque[_Item] = deque()
        self._updates: dict[str, dict[str, _Update]] = {}  # model -> ref -> pending update
        self._snapshots: dict[str, _Snapshot] = {}
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
            self._push(_Text("error", rest_of({"code": exc.code, "message": exc.message})))
            return
        if command.action == "unsubscribe":
            self._unsubscribe(command)
            return
        try:
            batch_ms = _batch_ms(data)
        except ValueError as exc:  # nothing of the message is applied
            self._push(_Text("error", rest_of({"code": "invalid_batch_ms", "message": str(exc)})))
            return
        self._subscribe(command, batch_ms)

    def _subscribe(self, command: Command, batch_ms: int | None) -> None:
        echo = command.echo()
        if batch_ms is not None:
            echo["batch_ms"] = batch_ms
            self.batch_ms = batch_ms or None
        self._push(_Text("subscribed", rest_of(echo)))
        if "trades" in command.channels:
            self._trades |= command.models
        if "book" in command.channels:
            self._book |= command.models
            for model in sorted(command.models):  # a resubscribe is a fresh snapshot
                self._mark_snapshot(model, "subscribe")

    def _unsubscribe(self, command: Command) -> None:
        if "trades" in command.channels:
            self._trades -= command.models
        if "book" in command.channels:
            self._book -= command.models
            for model in command.models:
                self._drop_pending(model)
        self._push(_Text("unsubscribed", rest_of(command.echo())))

    def follows(self, model: str) -> bool:
        """Whether a change to `model` could reach this session (it subscribes to its book)."""
        return model in self._book and self.close is None

    def on_change(self, change: WireChange, text: str | None = None) -> bool:
        """A change the replica applied (or a `resync`: the replica reloaded the model).

        `text` is `update_text(change)`, when the caller built it once for every session.
        Returns True when a message was queued (a merge into a waiting one is not).
        """
        model = change.model
        if model not in self._book or self.close is not None:
            return False
        if change.kind == "resync":
            self._mark_snapshot(model, "resync")
            return True
        if model in self._snapshots:
            return False  # the snapshot waiting to be sent is built later: it holds this change
        by_ref = self._updates.get(model)
        if by_ref is None:
            by_ref = self._updates[model] = {}
        pending = by_ref.get(change.ref)
        if pending is None:
            by_ref[change.ref] = pending = _Update(change, text)
            self._queue.append(pending)
            return True
        pending.merge(change)
        self.conflated += 1
        return False

    def on_trade(self, trade: WireTrade) -> None:
        if self.close is None and trade.model in self._trades:
            self._push(_Text("trade", trade.rest))

    def on_trades_missed(self, missed: int) -> None:
        """The hub found `missed` trades gone from the stream before it could read them."""
        if self.close is None and self._trades:
            fields = {"channel": "trades", "reason": "trades_missed", "missed": missed}
            self._push(_Text("resync", rest_of(fields)))

    def tick(self, now_ms: int) -> None:
        """The clock: queue a heartbeat when one is due (at most one waits at a time)."""
        if self.close is not None or now_ms < self._next_heartbeat_ms:
            return
        self._next_heartbeat_ms = now_ms + self._limits.heartbeat_ms
        if not self._heartbeat_queued:
            self._heartbeat_queued = True
            self._queue.append(_Heartbeat(now_ms))

    # -- out --------------------------------------------------------------------------------------
    @property
    def has_output(self) -> bool:
        return bool(self._queue)

    @property
    def pending(self) -> int:
        """Messages waiting (an upper bound: superseded entries are skipped when reached)."""
        return len(self._queue)

    def next_message(self) -> str | None:
        """The next message's text with its seq, or None when nothing waits."""
        while self._queue:
            item = self._queue.popleft()
            rest = self._rest(item)
            if rest is not None:
                self.seq += 1
                return f'{{"type":"{rest[0]}","seq":{self.seq}{rest[1]}'
        return None

    def next_frame(self) -> str | None:
        """The next frame: one message, or with `batch_ms` a JSON array of all that wait."""
        if self.batch_ms is None:
            return self.next_message()
        parts: list[str] = []
        size, limit, queue, updates = 0, self._limits.max_frame_chars, self._queue, self._updates
        while queue and size < limit:
            item = queue.popleft()
            if type(item) is _Update:  # the common case, inlined: a thousand sessions do this
                change = item.change
                by_ref = updates.get(change.model)
                if by_ref is None or by_ref.get(change.ref) is not item:
                    continue  # superseded by a snapshot or an unsubscribe
                del by_ref[change.ref]
                self.seq += 1
                message = f'{{"type":"update","seq":{self.seq}{item.rest()}'
            else:
                rest = self._rest(item)
                if rest is None:
                    continue
                self.seq += 1
                message = f'{{"type":"{rest[0]}","seq":{self.seq}{rest[1]}'
            parts.append(message)
            size += len(message)
        return f"[{','.join(parts)}]" if parts else None

    def _rest(self, item: _Item) -> tuple[str, str] | None:
        if isinstance(item, _Update):
            by_ref = self._updates.get(item.change.model)
            if by_ref is None or by_ref.get(item.change.ref) is not item:
                return None  # superseded by a snapshot or an unsubscribe
            del by_ref[item.change.ref]
            return "update", item.rest()
        if isinstance(item, _Snapshot):
            if self._snapshots.get(item.model) is not item:
                return None
            del self._snapshots[item.model]
            head = f',"model":{dumps(item.model)},"reason":"{item.reason}"'
            return "snapshot", head + self._cache.body(item.model)
        if isinstance(item, _Heartbeat):
            self._heartbeat_queued = False
            return "heartbeat", f',"ts":{item.ts}}}'
        self._bounded -= 1
        return item.type, item.rest

    # -- helpers ----------------------------------------------------------------------------------
    def _push(self, item: _Text) -> None:
        self._bounded += 1
        if self._bounded > self._limits.max_pending:
            self._fail(f"slow consumer: more than {self._limits.max_pending} messages waiting")
            return
        self._queue.append(item)

    def _mark_snapshot(self, model: str, reason: SnapshotReason) -> None:
        self._drop_pending(model)
        self._snapshots[model] = mark = _Snapshot(model, reason)
        self._queue.append(mark)

    def _drop_pending(self, model: str) -> None:
        self._snapshots.pop(model, None)
        self._updates.pop(model, None)

    def _fail(self, reason: str) -> None:
        self.close = Close(CLOSE_SLOW_CONSUMER, reason)
        self._queue.clear()
        self._updates.clear()
        self._snapshots.clear()
        self._bounded = 0
