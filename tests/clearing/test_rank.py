"""The threshold walk: it stops early, yet finds exactly what sorting the whole book finds."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.index import BookIndex
from clearing.money import PriceMicros
from clearing.rank import Ranked, scan, walk
from clearing.types import Offer, OfferLive, Requirements

BASE = Offer(
    provider="a",
    offer_id="o",
    model="m",
    input_price=PriceMicros(1),
    output_price=PriceMicros(1),
    cached_input_price=PriceMicros(1),
    concurrency=1,
    quality=80,
    context_window=1_000_000,
    max_output_tokens=100,
    features=frozenset(),
    seq=0,
)

# Tiny prices and token counts: equal rank costs everywhere, so the tie rule decides a lot.
tiny_offers = st.lists(
    st.builds(
        lambda n, i, o, seq, out, model: replace(
            BASE,
            offer_id=f"o{n}",
            input_price=PriceMicros(i),
            output_price=PriceMicros(o),
            seq=seq,
            max_output_tokens=out,
            model=model,
        ),
        st.integers(0, 9),
        st.integers(1, 4),
        st.integers(1, 4),
        st.integers(0, 3),
        st.sampled_from((3, 4, 5)),  # never below max_tokens: every offer qualifies
        st.sampled_from(("m", "m", "n")),
    ),
    max_size=12,
)
tiny_requirements = st.builds(
    Requirements,
    model=st.sampled_from(("m", "auto")),
    input_tokens=st.integers(0, 3),
    max_tokens=st.none() | st.integers(0, 3),
)


def sorted_costs(offers: list[Offer], req: Requirements) -> list[str]:
    def cost(o: Offer) -> int:
        out = o.max_output_tokens if req.max_tokens is None else req.max_tokens
        return req.input_tokens * o.input_price + out * o.output_price

    latest = {o.ref: o for o in offers}
    considered = [o for o in latest.values() if req.model in ("auto", o.model)]
    return [o.ref for o in sorted(considered, key=lambda o: (cost(o), o.seq, o.ref))]


def final_refs(rows: list[Ranked], final: int) -> list[str]:
    return [row[2] for row in rows[:final]]


@settings(max_examples=500, deadline=None)
@given(tiny_offers, tiny_requirements, st.integers(1, 4))
def test_the_final_prefix_is_the_sorted_prefix(
    offers: list[Offer], req: Requirements, least: int
) -> None:
    index = BookIndex()
    for o in offers:
        index.upsert(o)
    books = index.books(None if req.model == "auto" else req.model)
    found = walk(books, {}, req, lambda rows, final: final >= least, least=least)
    expected = sorted_costs(offers, req)
    assert final_refs(found.qualifying, found.final) == expected[: found.final]
    assert found.final >= min(least, len(expected))
    assert final_refs(scan(books, {}, req).qualifying, len(expected)) == expected


def test_an_unread_offer_at_the_threshold_can_still_win_on_time() -> None:
    # q costs 1 + 3 = 4 and is read first (cheapest input); u costs 2 + 2 = 4 but is earlier.
    q = replace(BASE, offer_id="q", input_price=PriceMicros(1), output_price=PriceMicros(3), seq=9)
    u = replace(BASE, offer_id="u", input_price=PriceMicros(2), output_price=PriceMicros(2), seq=1)
    index = BookIndex()
    index.upsert(q)
    index.upsert(u)
    req = Requirements(model="m", input_tokens=1, max_tokens=1)
    found = walk(index.books("m"), {}, req, lambda rows, final: final >= 1)
    assert final_refs(found.qualifying, found.final)[:1] == ["a/u"]


def test_walk_records_passed_over_offers_as_it_reads() -> None:
    index = BookIndex()
    for n in range(20):
        index.upsert(replace(BASE, offer_id=f"o{n}", input_price=PriceMicros(n + 1), seq=n))
    busy = {f"a/o{n}": OfferLive(in_flight=1) for n in range(3)}
    req = Requirements(model="m", input_tokens=1, max_tokens=1)
    found = walk(index.books("m"), busy, req, lambda rows, final: final >= 2, least=2)
    assert [p.ref for p in found.passed] == ["a/o0", "a/o1", "a/o2"]
    assert final_refs(found.qualifying, found.final)[:2] == ["a/o3", "a/o4"]
    assert found.final < 20


def test_a_stream_that_shows_no_gain_is_still_read() -> None:
    # Every input price is equal, so only reading the output order raises the bound; the walk
    # must not starve it, nor read the input order alone to the end.
    index = BookIndex()
    for n in range(200):
        index.upsert(replace(BASE, offer_id=f"o{n}", output_price=PriceMicros(n + 1), seq=n))
    req = Requirements(model="m", input_tokens=1, max_tokens=1)
    found = walk(index.books("m"), {}, req, lambda rows, final: final >= 3, least=3)
    assert final_refs(found.qualifying, found.final)[:3] == ["a/o0", "a/o1", "a/o2"]
    assert len(found.qualifying) < 50
