"""Shared helpers for the feed session tests: a replica-like view, offers, changes and readers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader

from auction.book_stream import BookChange, ChangeKind
from auction.feed import ChangeLog, FeedLimits, FeedSession
from auction.feed_wire import Trade, WireChange
from clearing.index import BookIndex
from clearing.money import Nanos, PriceMicros, parse_price
from clearing.types import Offer, OfferLive

MODELS = ("gpt-4o", "llama-3.1-8b-instruct", "mistral-small")


@dataclass
class View:
    """A book as a replica holds it: a real BookIndex, live state and version numbers."""

    index: BookIndex = field(default_factory=BookIndex)
    live: dict[str, OfferLive] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def version(self, model: str) -> int:
        return self.versions.get(model, 0)

    def apply(self, change: BookChange) -> WireChange:
        """Apply a change the way the replica does, and return its wire form."""
        self.versions[change.model] = self.version(change.model) + 1
        if change.kind in ("withdrawn", "expired", "cancelled"):
            self.index.remove(change.ref)
            self.live.pop(change.ref, None)
        elif change.offer is not None:
            self.index.upsert(change.offer)
        if change.in_flight is not None:
            self.live[change.ref] = OfferLive(change.in_flight, change.tokens or 0)
        return WireChange.of(change)


def offer(offer_id: str = "o1", model: str = "gpt-4o", price: int = 500_000, **kw: Any) -> Offer:
    fields: dict[str, Any] = {
        "provider": "acme",
        "offer_id": offer_id,
        "model": model,
        "input_price": PriceMicros(price),
        "output_price": PriceMicros(price * 3),
        "cached_input_price": PriceMicros(price // 2),
        "concurrency": 8,
        "quality": 88,
        "context_window": 128_000,
        "max_output_tokens": 4096,
        "features": frozenset({"tools"}),
        "seq": 1,
    }
    fields.update(kw)
    return Offer(**fields)


def change(kind: ChangeKind, o: Offer, **kw: Any) -> BookChange:
    with_offer = kind in ("new", "changed")
    fields: dict[str, Any] = {
        "kind": kind,
        "model": o.model,
        "ref": o.ref,
        "n": 0,
        "ts": 1_700_000_000_000,
        "stream_id": "1-0",
        "offer": o if with_offer else None,
        "in_flight": 0 if kind == "new" else None,
    }
    fields.update(kw)
    return BookChange(**fields)


def session(view: View | None = None, **limits: int) -> FeedSession:
    view = view or View()
    return FeedSession(view, MODELS, FeedLimits(**limits), now_ms=0)


def drain(s: FeedSession) -> list[dict[str, Any]]:
    out = []
    while (text := s.next_message()) is not None:
        message = json.loads(text)
        assert isinstance(message, dict)
        out.append(message)
    return out


def subscribe(channels: list[str], models: list[str] | None = None) -> str:
    message: dict[str, object] = {"type": "subscribe", "channels": channels}
    if models is not None:
        message["models"] = models
    return json.dumps(message)


def trade(model: str = "gpt-4o", ts: int = 1) -> Trade:
    return Trade(model, "acme", "o1", PriceMicros(590_000), PriceMicros(790_000), 812, 240,
                 Nanos(670_000), ts)  # fmt: skip


def logged(view: View, log: ChangeLog, kind: ChangeKind, o: Offer, **kw: Any) -> None:
    """A change the replica applied, appended to the shared log as the hub does."""
    log.append(view.apply(change(kind, o, **kw)))


def log_session(view: View, log: ChangeLog, **limits: int) -> FeedSession:
    return FeedSession(view, MODELS, FeedLimits(**limits), now_ms=0, log=log)


def batches(s: FeedSession) -> list[list[dict[str, Any]]]:
    """Every frame `next_frame` gives, each parsed as a JSON array."""
    out: list[list[dict[str, Any]]] = []
    for _ in range(10_000):
        text = s.next_frame()
        if text is None:
            return out
        batch = json.loads(text)
        assert isinstance(batch, list) and batch
        out.append(batch)
    raise AssertionError("next_frame never ran dry")


def batched(batch_ms: object, channels: list[str] | None = None) -> str:
    message = json.loads(subscribe(channels or ["book"], ["gpt-4o"]))
    return json.dumps({**message, "batch_ms": batch_ms})


def local_book(messages: list[dict[str, Any]]) -> Mapping[str, int]:
    book: dict[str, int] = {}
    for m in messages:
        if m["type"] == "snapshot":
            book = {f"acme/{o['offer_id']}": _micros(o) for o in m["offers"]}
        elif m["type"] == "update" and "offer" in m:
            book[m["ref"]] = _micros(m["offer"])
        elif m["type"] == "update" and m["kind"] == "withdrawn":
            book.pop(m["ref"], None)
    return book


def _micros(wire: Mapping[str, Any]) -> int:
    return parse_price(wire["input_usd_per_mtok"])


def parse_frames(data: bytes) -> list[Frame]:
    """Server frames as the `websockets` library reads them."""
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frames.append(done.value.value)
    return frames
