"""The book index agrees with a plain dict through any sequence of upserts and removes."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.index import BookIndex
from clearing.money import PriceMicros
from clearing.types import Offer

BASE = Offer(
    provider="a",
    offer_id="o",
    model="m",
    input_price=PriceMicros(1),
    output_price=PriceMicros(1),
    cached_input_price=PriceMicros(1),
    concurrency=1,
    quality=80,
    context_window=1_000,
    max_output_tokens=100,
    features=frozenset(),
    seq=0,
)

# Few values per field, so that a ref often comes back at the same price and seq (an in-place
# replacement) or at another price or model (a move).
small_offers = st.builds(
    lambda provider, n, model, i, o, seq, conc, out, quality: replace(
        BASE,
        provider=provider,
        offer_id=f"o{n}",
        model=model,
        input_price=PriceMicros(i),
        output_price=PriceMicros(o),
        seq=seq,
        concurrency=conc,
        max_output_tokens=out,
        quality=quality,
    ),
    st.sampled_from(("a", "b")),
    st.integers(0, 3),
    st.sampled_from(("m", "n")),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(1, 2),
    st.sampled_from((100, 200, 300)),
    st.sampled_from((40, 80)),
)
refs = st.builds(lambda p, n: f"{p}/o{n}", st.sampled_from(("a", "b", "c")), st.integers(0, 4))
operations = st.lists(st.one_of(small_offers, refs), max_size=60)


def check(index: BookIndex, model: dict[str, Offer]) -> None:
    assert len(index) == len(model)
    assert index.models() == sorted({o.model for o in model.values()})
    for name in ("m", "n"):
        mine = [o for o in model.values() if o.model == name]
        by_input = sorted(mine, key=lambda o: (o.input_price, o.seq, o.ref))
        by_output = sorted(mine, key=lambda o: (o.output_price, o.seq, o.ref))
        assert index.offers(name) == by_input
        books = index.books(name)
        assert len(books) == (1 if mine else 0)
        for book in books:
            assert [row[3] for row in book.by_output] == by_output
            assert [row[:3] for row in book.by_input] == [
                (o.input_price, o.seq, o.ref) for o in by_input
            ]
            assert book.max_outputs == Counter(o.max_output_tokens for o in mine)
            assert book.qualities == Counter(o.quality for o in mine)
            assert book.least_max_output() == min(o.max_output_tokens for o in mine)
            assert book.best_quality() == max(o.quality for o in mine)
    assert sorted(index.offers(), key=lambda o: o.ref) == sorted(
        model.values(), key=lambda o: o.ref
    )


@settings(max_examples=300, deadline=None)
@given(operations)
def test_index_agrees_with_a_dict(ops: list[Offer | str]) -> None:
    index = BookIndex()
    model: dict[str, Offer] = {}
    for op in ops:
        if isinstance(op, Offer):
            index.upsert(op)
            model[op.ref] = op
        else:
            assert index.remove(op) == model.pop(op, None)
        for ref in ("a/o0", "b/o1", "c/o2"):
            assert index.get(ref) == model.get(ref)
        check(index, model)


def test_replacing_in_place_keeps_the_order_and_updates_the_offer() -> None:
    index = BookIndex()
    first = replace(BASE, offer_id="x", input_price=PriceMicros(5), seq=3)
    other = replace(BASE, offer_id="y", input_price=PriceMicros(4), seq=9)
    index.upsert(first)
    index.upsert(other)
    busier = replace(first, concurrency=7, max_output_tokens=50, quality=10)
    index.upsert(busier)
    assert index.offers("m") == [other, busier]
    assert index.get("a/x") is busier
    (book,) = index.books("m")
    assert book.max_outputs == {50: 1, 100: 1}
    assert book.qualities == {10: 1, 80: 1}
    assert index.remove("a/x") is busier
    assert index.remove("a/x") is None
    assert index.remove("a/y") is other
    assert index.books() == [] and index.models() == [] and len(index) == 0
