"""The book's change streams read back: entries as `BookChange` values (format: auction.book)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

import redis.asyncio as aioredis

from auction.keys import Keys
from auction.offer_codec import offer_from_text
from clearing.types import Offer

StreamKind = Literal["new", "changed", "withdrawn", "cancelled", "expired", "capacity"]
ChangeKind = StreamKind | Literal["resync"]
"""`resync` is never in a stream: a replica that reloaded a model after a gap says so with it."""

REMOVALS: frozenset[str] = frozenset({"withdrawn", "cancelled", "expired"})


@dataclass(frozen=True, slots=True)
class BookChange:
    """One change to a model's book.

    `offer` is set for new and changed; `in_flight` and `tokens` for new and capacity.
    A resync has an empty ref and `n` the change number the reloaded book is consistent with.
    """

    kind: ChangeKind
    model: str
    ref: str
    n: int
    ts: int
    stream_id: str
    offer: Offer | None = None
    in_flight: int | None = None
    tokens: int | None = None
    # The offer's JSON as the stream holds it, so the feed can pass it on without encoding it
    # again (same fields as `offer_to_json(offer)`, in another order).
    offer_json: str | None = field(default=None, compare=False, repr=False)


def text(value: object) -> str:
    """A Redis reply as str, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"expected a string reply, got {type(value).__name__}")


def texts(value: object) -> list[str]:
    """A Redis array reply of strings as a list of str."""
    if not isinstance(value, list):
        raise TypeError(f"expected an array reply, got {type(value).__name__}")
    return [text(v) for v in value]


def parse_change(stream_id: object, fields: object) -> BookChange:
    """Decode one stream entry (its id and its field mapping, as XREAD or XRANGE give them)."""
    if not isinstance(fields, Mapping):
        raise TypeError("a stream entry's fields must be a mapping")
    # Every replica decodes every change: bytes (the usual reply) skip the call to `text`.
    f = {
        (k.decode() if type(k) is bytes else text(k)): (v.decode() if type(v) is bytes else text(v))
        for k, v in fields.items()
    }
    offer = f.get("offer")
    in_flight = f.get("in_flight")
    tokens = f.get("tokens")
    return BookChange(
        kind=cast(StreamKind, f["kind"]),
        model=f["model"],
        ref=f["ref"],
        n=int(f["n"]),
        ts=int(f["ts"]),
        stream_id=text(stream_id),
        offer=None if offer is None else offer_from_text(offer),
        in_flight=None if in_flight is None else int(in_flight),
        tokens=None if tokens is None else int(tokens),
        offer_json=offer,
    )


async def read_changes(
    redis: aioredis.Redis, keys: Keys, model: str, start: str = "-", count: int | None = None
) -> list[BookChange]:
    """The model's changes from stream id `start` on (XRANGE; "(ID" starts after ID)."""
    entries = await redis.xrange(keys.book_changes(model), min=start, count=count)
    return [parse_change(stream_id, fields) for stream_id, fields in entries or []]
