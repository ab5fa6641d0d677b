"""The in-memory order book: live offers per model, kept sorted by input and by output price.

A server process updates this on every book change (tens of thousands a second), so an update is
a dictionary write plus a binary search and a list insert or delete per order, and one that keeps
an offer's prices and seq just overwrites its rows in place: nothing is ever re-sorted.
Each order holds `(price, seq, ref, offer)` tuples, so it sorts by price, then time priority, then
ref; refs are unique, so a comparison never reaches the offer itself. The threshold walk in
`clearing.rank` reads both orders from their cheap ends and stops early.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from clearing.types import Offer

Entry = tuple[int, int, str, Offer]
"""One row of a price order: (price in micro-USD per Mtok, seq, ref, offer)."""


def _entries(ref: str, offer: Offer) -> tuple[Entry, Entry]:
    return (
        (offer.input_price, offer.seq, ref, offer),
        (offer.output_price, offer.seq, ref, offer),
    )


def _delete(order: list[Entry], entry: Entry) -> None:
    # The entry holds the very offer object stored, so equal prefixes compare equal, never `<`.
    del order[bisect_left(order, entry)]


def _count(counts: dict[int, int], value: int, change: int) -> None:
    left = counts.get(value, 0) + change
    if left:
        counts[value] = left
    else:
        del counts[value]


class ModelBook:
    """One model's offers in both price orders. Read-only outside `BookIndex`.

    `max_outputs` and `qualities` count the offers per output limit and per quality: few
    distinct values, so the walk's floor on the output limit and the best quality of the model
    are cheap to find, and an update touches no long list.
    """

    __slots__ = ("by_input", "by_output", "max_outputs", "qualities")

    def __init__(self) -> None:
        self.by_input: list[Entry] = []
        self.by_output: list[Entry] = []
        self.max_outputs: dict[int, int] = {}
        self.qualities: dict[int, int] = {}

    def add(self, ref: str, offer: Offer) -> None:
        by_in, by_out = _entries(ref, offer)
        insort(self.by_input, by_in)
        insort(self.by_output, by_out)
        _count(self.max_outputs, offer.max_output_tokens, 1)
        _count(self.qualities, offer.quality, 1)

    def discard(self, ref: str, offer: Offer) -> None:
        by_in, by_out = _entries(ref, offer)
        _delete(self.by_input, by_in)
        _delete(self.by_output, by_out)
        _count(self.max_outputs, offer.max_output_tokens, -1)
        _count(self.qualities, offer.quality, -1)

    def replace(self, ref: str, old: Offer, new: Offer) -> None:
        """Swap in `new` where `old` stood: same prices and seq, so the same places."""
        old_in, old_out = _entries(ref, old)
        new_in, new_out = _entries(ref, new)
        self.by_input[bisect_left(self.by_input, old_in)] = new_in
        self.by_output[bisect_left(self.by_output, old_out)] = new_out
        _count(self.max_outputs, old.max_output_tokens, -1)
        _count(self.max_outputs, new.max_output_tokens, 1)
        _count(self.qualities, old.quality, -1)
        _count(self.qualities, new.quality, 1)

    def least_max_output(self) -> int:
        """The smallest output limit among the offers (a book is never empty)."""
        return min(self.max_outputs)

    def best_quality(self) -> int:
        """The highest quality among the offers."""
        return max(self.qualities)

    def __len__(self) -> int:
        return len(self.by_input)


def _same_place(old: Offer, new: Offer) -> bool:
    return (old.model, old.input_price, old.output_price, old.seq) == (
        new.model,
        new.input_price,
        new.output_price,
        new.seq,
    )


class BookIndex:
    """Every live offer by ref, and per model in price order."""

    __slots__ = ("_books", "_offers")

    def __init__(self) -> None:
        self._offers: dict[str, Offer] = {}
        self._books: dict[str, ModelBook] = {}

    def upsert(self, offer: Offer) -> None:
        """Add `offer`, or replace the offer with the same ref."""
        ref = offer.ref
        old = self._offers.get(ref)
        self._offers[ref] = offer
        if old is not None:
            if _same_place(old, offer):
                self._books[offer.model].replace(ref, old, offer)
                return
            self._unlink(ref, old)
        book = self._books.get(offer.model)
        if book is None:
            book = self._books[offer.model] = ModelBook()
        book.add(ref, offer)

    def remove(self, ref: str) -> Offer | None:
        """Remove the offer `ref` and return it; None (and no change) if it is absent."""
        old = self._offers.pop(ref, None)
        if old is not None:
            self._unlink(ref, old)
        return old

    def _unlink(self, ref: str, old: Offer) -> None:
        book = self._books[old.model]
        book.discard(ref, old)
        if not book:
            del self._books[old.model]

    def get(self, ref: str) -> Offer | None:
        return self._offers.get(ref)

    def offers(self, model: str | None = None) -> list[Offer]:
        """The offers of `model` (every model if None), each model's in input-price order."""
        return [entry[3] for book in self.books(model) for entry in book.by_input]

    def models(self) -> list[str]:
        """The models that have at least one offer, sorted."""
        return sorted(self._books)

    def books(self, model: str | None = None) -> list[ModelBook]:
        """The per-model books of `model` (none if it has no offers), or of every model if None."""
        if model is None:
            return [self._books[name] for name in sorted(self._books)]
        book = self._books.get(model)
        return [] if book is None else [book]

    def __len__(self) -> int:
        return len(self._offers)
