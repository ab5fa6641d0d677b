"""The book's change streams read back: entries as `BookChange` values (format: auction.book)."""

from __future__ import annotations

from collections.abc import Callable
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


def parse_change(
    stream_id: object, fields: object, decode: Callable[[str], Offer] = offer_from_text
) -> BookChange:
    """Decode one stream entry (its id and its field mapping, as XREAD or XRANGE give them).

    `decode` reads the offer's JSON (`OfferCodec.decode` skips parsing offers this process wrote).
    """
    if type(fields) is dict and b"kind" in fields:
        # The lean client's entries (every replica decodes every change): bytes keys and values.
        get = fields.get
        offer = _opt(get(b"offer"))
        in_flight = get(b"in_flight")
        tokens = get(b"tokens")
        return BookChange(  # positional, in field order: every change of the book comes here
            cast(StreamKind, fields[b"kind"].decode()),
            fields[b"model"].decode(),
            fields[b"ref"].decode(),
            int(fields[b"n"]),
            int(fields[b"ts"]),
            stream_id if type(stream_id) is str else text(stream_id),
            None if offer is None else decode(offer),
            None if in_flight is None else int(in_flight),
            None if tokens is None else int(tokens),
            offer,
        )
    if not isinstance(fields, dict):
        raise TypeError("a stream entry's fields must be a mapping")
    f = {text(k): text(v) for k, v in fields.items()}
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
        offer=None if offer is None else decode(offer),
        in_flight=None if in_flight is None else int(in_flight),
        tokens=None if tokens is None else int(tokens),
        offer_json=offer,
    )


def _opt(value: object) -> str | None:
    return None if value is None else text(value)


async def read_changes(
    redis: aioredis.Redis, keys: Keys, model: str, start: str = "-", count: int | None = None
) -> list[BookChange]:
    """The model's changes from stream id `start` on (XRANGE; "(ID" starts after ID)."""
    entries = await redis.xrange(keys.book_changes(model), min=start, count=count)
    return [parse_change(stream_id, fields) for stream_id, fields in entries or []]
