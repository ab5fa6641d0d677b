"""Ranking: the cheapest qualifying offers for one request, found without reading the whole book.

The threshold walk (Fagin's threshold algorithm) reads the input-price order and the
output-price order together from their cheap ends. The rank cost of an offer is
`input_tokens × input_price + out × output_price`, where `out` is `max_tokens`, or the offer's own
output limit when the request gives none; then `out` is at least the smallest output limit among
the offers walked (`ModelBook.least_max_output`). So any offer not read yet costs at least

    bound = input_tokens × (next input price) + out_floor × (next output price)

and if it costs exactly `bound`, both its prices equal the next ones in the orders that carry
weight, so it also sits at or after those rows in (seq, ref): the threshold key
`(bound, seq, ref)` of the later of those rows is a lower bound on any unread offer's rank key
`(cost, seq, ref)`. Every qualifying offer read whose key is below it is final, in its final
place. The walk stops as soon as the final prefix is enough for the caller (depth, and for second
price the next offer from another provider), or when every offer has been read.

Which order to read next: the one whose weighted price has risen most per row so far (so a
request whose cost is mostly output reads mostly the output order), with neither order left
unread for long. Costs: with correlated input and output prices (the usual book) the walk reads
little more than the offers it ranks; with independent prices about sqrt(n × depth) rows; when
fewer than `depth` offers qualify, every row.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from clearing.index import Entry, ModelBook
from clearing.qualify import ask_picos, pass_reason
from clearing.types import Offer, OfferLive, PassedOver, Requirements

Ranked = tuple[int, int, str, Offer]
"""A qualifying offer's rank key and the offer: (rank cost in pico-USD, seq, ref, offer)."""

Enough = Callable[[list[Ranked], int], bool]
"""Given the qualifying offers read (sorted) and how many of them are final: may the walk stop?"""


@dataclass(slots=True)
class Walk:
    """What a walk or scan found: qualifying offers sorted by rank key, and the passed over.

    `qualifying[:final]` are the cheapest qualifying offers of all, in order; later ones were read
    but unread offers may still rank between them. After a full read, `final` is all of them.
    """

    qualifying: list[Ranked] = field(default_factory=list)
    final: int = 0
    passed: list[PassedOver] = field(default_factory=list)

    def examine(self, entry: Entry, req: Requirements, live: Mapping[str, OfferLive]) -> None:
        """Qualify one row; a qualifier is appended (unsorted), the rest are passed over."""
        _, seq, ref, offer = entry
        reason = pass_reason(req, offer, live.get(ref))
        if reason is None:
            self.qualifying.append((ask_picos(req, offer), seq, ref, offer))
        else:
            self.passed.append(PassedOver(ref, offer.model, reason))


class _Stream:
    """Several sorted orders read as one (one order per model for "auto"), with a weight.

    The weight is the token count its price is multiplied by in the rank cost. Every stream of
    a walk holds every offer walked, so none runs dry while an offer is still unread.
    """

    __slots__ = ("_head", "_rows", "reads", "start", "weight")

    def __init__(self, orders: Sequence[list[Entry]], weight: int) -> None:
        # Rows are unique, so merging never compares two offers.
        rows = iter(orders[0]) if len(orders) == 1 else heapq.merge(*orders)
        self._rows: Iterator[Entry] = rows
        self._head: Entry | None = next(rows, None)
        self.weight = weight
        self.start = 0 if self._head is None else self._head[0]
        self.reads = 0

    def head(self) -> Entry:
        assert self._head is not None
        return self._head

    def weighted_head(self) -> int:
        assert self._head is not None
        return self.weight * self._head[0]

    def pop(self) -> Entry:
        entry = self._head
        assert entry is not None
        self._head = next(self._rows, None)
        self.reads += 1
        return entry

    def faster_than(self, other: _Stream) -> bool:
        """Whether to read this stream next rather than `other`.

        The one whose weighted head has risen more per read so far, unless either has had
        fewer than 1/8 of the other's reads: a stream whose first rows share a price shows no
        gain, and must still be read now and then to learn it has some.
        """
        if self.reads > 8 * other.reads or other.reads > 8 * self.reads:
            return self.reads < other.reads
        mine = (self.weighted_head() - self.weight * (self.start - 1)) * (other.reads + 1)
        theirs = (other.weighted_head() - other.weight * (other.start - 1)) * (self.reads + 1)
        return mine >= theirs


def scan(books: Sequence[ModelBook], live: Mapping[str, OfferLive], req: Requirements) -> Walk:
    """Read every offer of `books`; the result is complete (`final` counts every qualifier)."""
    found = Walk()
    for book in books:
        for entry in book.by_input:
            found.examine(entry, req, live)
    found.qualifying.sort()
    found.final = len(found.qualifying)
    return found


def _streams(books: Sequence[ModelBook], req: Requirements) -> list[_Stream]:
    """The input and output orders of `books`, less any whose price does not affect the cost."""
    out_floor = req.max_tokens
    if out_floor is None:
        out_floor = min((book.least_max_output() for book in books), default=0)
    streams = [
        _Stream([book.by_input for book in books], req.input_tokens),
        _Stream([book.by_output for book in books], out_floor),
    ]
    return [stream for stream in streams if stream.weight > 0]


def walk(
    books: Sequence[ModelBook],
    live: Mapping[str, OfferLive],
    req: Requirements,
    enough: Enough,
    least: int = 1,
) -> Walk:
    """Read offers of `books` cheapest first until `enough` says the final prefix will do.

    `enough` is only asked once at least `least` qualifying offers have been read.
    """
    streams = _streams(books, req)
    if not streams:  # every offer costs 0: the price orders say nothing about rank
        return scan(books, live, req)
    total = sum(len(book) for book in books)
    found = Walk()
    qualifying, passed = found.qualifying, found.passed
    seen: set[str] = set()
    first, last = streams[0], streams[-1]
    while len(seen) < total:  # as Walk.examine, but keeping the qualifiers sorted
        _, seq, ref, offer = (first if first.faster_than(last) else last).pop()
        if ref in seen:
            continue
        seen.add(ref)
        reason = pass_reason(req, offer, live.get(ref))
        if reason is not None:
            passed.append(PassedOver(ref, offer.model, reason))
        else:
            insort(qualifying, (ask_picos(req, offer), seq, ref, offer))
        if len(qualifying) < least or len(seen) == total:
            continue
        # Cheap test first: while the bound is below the least-th cost, fewer are final.
        bound = first.weighted_head() + (0 if last is first else last.weighted_head())
        if bound >= qualifying[least - 1][0]:
            found.final = bisect_left(qualifying, _threshold(streams))
            if enough(qualifying, found.final):
                return found
    found.final = len(qualifying)
    return found


def _threshold(streams: list[_Stream]) -> Ranked:
    """The least rank key any unread offer can have (see the module docstring)."""
    bound = 0
    tie: Entry | None = None
    for stream in streams:
        head = stream.head()
        bound += stream.weight * head[0]
        if tie is None or (head[1], head[2]) > (tie[1], tie[2]):
            tie = head
    assert tie is not None
    # If a read qualifier has this very key, it is the tie row itself: the same offer object,
    # so the tuples compare equal and bisect_left leaves it out of the final prefix.
    return (bound, tie[1], tie[2], tie[3])
