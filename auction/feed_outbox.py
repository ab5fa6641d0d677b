"""What a feed session's outbox holds, and the change log that sessions keeping up share.

Every message is bytes built once where it can be: an update's text after its seq is encoded
once per change (`update_bytes`) and shared, a snapshot's body once per book version
(`SnapshotCache`). A session only adds its own head and `seq`.

`ChangeLog`: the hub appends each book change once; every session reads the log from a cursor of
its own when its socket can take more. A session that keeps up therefore costs nothing per change
until its frames are written. One that lags has its unread part of the log folded into its
outbox, where updates are conflated per offer (`PendingUpdate.merge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from auction.book_stream import REMOVALS
from auction.feed_wire import WireChange, dumps, rest_of
from auction.offer_codec import offer_to_json
from clearing.index import BookIndex
from clearing.money import format_price
from clearing.types import OfferLive

SnapshotReason = Literal["subscribe", "resync"]


def head(kind: str) -> bytes:
    """A message's bytes up to its seq."""
    return b'{"type":"%s","seq":' % kind.encode()


UPDATE_HEAD = head("update")
TRADE_HEAD = head("trade")
SNAPSHOT_HEAD = head("snapshot")
HEARTBEAT_HEAD = head("heartbeat")


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
        self._bodies: dict[str, tuple[int, bytes]] = {}

    def body(self, model: str) -> bytes:
        """The snapshot's bytes from `,"offers"` to the closing brace."""
        version = self._view.version(model)
        cached = self._bodies.get(model)
        if cached is not None and cached[0] == version:
            return cached[1]
        body = rest_of(_snapshot_fields(self._view, model)).encode()
        self._bodies[model] = (version, body)
        return body


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


class ChangeLog:
    """Book changes in the order the replica applied them, each with its update's shared bytes.

    Positions count from 0 for the life of the log; `trim` drops what every reader has passed.
    """

    __slots__ = ("base", "entries")

    def __init__(self) -> None:
        self.base = 0  # the position of entries[0]
        self.entries: list[tuple[WireChange, bytes]] = []

    @property
    def end(self) -> int:
        """The position the next change will get."""
        return self.base + len(self.entries)

    def append(self, change: WireChange, raw: bytes | None = None) -> None:
        self.entries.append((change, update_bytes(change) if raw is None else raw))

    def trim(self, before: int) -> None:
        """Forget the changes before position `before`."""
        drop = min(before, self.end) - self.base
        if drop > 0:
            del self.entries[:drop]
            self.base += drop


def update_text(change: WireChange) -> str:
    """An `update` message's text after its seq: built once per change, shared by sessions."""
    return _update_text(
        change.kind, change.head, change.offer_json, change.in_flight, change.tokens, change.ts
    )


def update_bytes(change: WireChange) -> bytes:
    """`update_text` encoded (UTF-8), as sessions send it."""
    return update_text(change).encode()


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


class PendingUpdate:
    """A book update waiting to be sent; later changes to the same offer merge into it.

    Until a merge it is just the change and its shared bytes (a session keeping up merges none).
    """

    __slots__ = ("change", "in_flight", "kind", "merged", "offer_json", "raw", "tokens", "ts")

    def __init__(self, change: WireChange, raw: bytes | None) -> None:
        self.change = change  # the first change: model, ref and their escaped `head`
        self.raw = raw
        self.merged = False

    def merge(self, later: WireChange) -> None:
        if not self.merged:
            first, self.merged, self.raw = self.change, True, None
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

    def rest(self) -> bytes:
        if not self.merged:
            return self.raw if self.raw is not None else update_bytes(self.change)
        head = self.change.head
        text = _update_text(self.kind, head, self.offer_json, self.in_flight, self.tokens, self.ts)
        return text.encode()


@dataclass(frozen=True, slots=True)
class Text:
    """A finished message but for its seq: its head (`head`) and the bytes after the seq."""

    head: bytes
    rest: bytes

    @classmethod
    def of(cls, kind: str, fields: Mapping[str, object]) -> Text:
        return cls(head(kind), rest_of(fields).encode())


@dataclass(frozen=True, slots=True)
class SnapshotMark:
    """A snapshot to send: built from the replica when its turn comes."""

    model: str
    reason: SnapshotReason

    def head(self) -> bytes:
        return f',"model":{dumps(self.model)},"reason":"{self.reason}"'.encode()


@dataclass(frozen=True, slots=True)
class HeartbeatMark:
    ts: int


Item = PendingUpdate | SnapshotMark | Text | HeartbeatMark
