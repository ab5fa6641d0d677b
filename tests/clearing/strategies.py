"""Hypothesis strategies for the clearing tests: offers, books with live state, requirements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from hypothesis import strategies as st

from clearing.index import BookIndex
from clearing.money import Nanos, PriceMicros
from clearing.types import FEATURES, Offer, OfferLive, Requirements

# Small universes, so that ties in price and seq, shared providers and every reason are common.
PROVIDERS = ("acme", "bolt", "cirrus", "delta")
MODELS = ("m1", "m2")
REGIONS = ("us", "eu")
QUANTS = ("fp8", "bf16", "int4")
FEATURE_LIST = sorted(FEATURES)
T = TypeVar("T")


def rarely(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    """`strategy` one time in five, else None: a constraint that is usually off."""
    return st.integers(0, 4).flatmap(lambda n: strategy if n == 0 else st.none())


prices = st.integers(1, 12).map(lambda n: PriceMicros(n * 50_000))
features = st.frozensets(st.sampled_from(FEATURE_LIST))


_provider = st.sampled_from(PROVIDERS)
_offer_id = st.integers(0, 15).map(lambda n: f"o{n}")
_model = st.sampled_from(MODELS)
_output_factor = st.sampled_from((0, 4))  # 0: an independent output price; 4: four times input
_concurrency = st.integers(1, 3)
_quality = st.sampled_from((40, 70, 90))
_context = st.sampled_from((4_000, 32_000, 128_000))
_max_output = st.sampled_from((500, 1_000, 4_000))
_seq = st.integers(0, 20)
_quantization = st.none() | st.sampled_from(QUANTS)
_tpm = st.none() | st.integers(1_000, 20_000)
_ttft = st.none() | st.integers(50, 2_000)
_speed = st.none() | st.integers(10, 300)
_region = st.none() | st.sampled_from(REGIONS)


@st.composite
def offers(draw: st.DrawFn) -> Offer:
    price = draw(prices)
    factor = draw(_output_factor)
    return Offer(
        provider=draw(_provider),
        offer_id=draw(_offer_id),
        model=draw(_model),
        input_price=price,
        output_price=PriceMicros(price * factor) if factor else draw(prices),
        cached_input_price=draw(prices),
        concurrency=draw(_concurrency),
        quality=draw(_quality),
        context_window=draw(_context),
        max_output_tokens=draw(_max_output),
        features=draw(features),
        seq=draw(_seq),
        quantization=draw(_quantization),
        tokens_per_minute=draw(_tpm),
        ttft_ms=draw(_ttft),
        output_tokens_per_s=draw(_speed),
        region=draw(_region),
    )


lives = st.builds(
    OfferLive,
    in_flight=st.integers(0, 3),
    tokens_this_minute=st.integers(0, 20_000),
    cooling_down=st.integers(0, 4).map(lambda n: n == 0),
    observed_ttft_ms=st.none() | st.integers(50, 2_000),
    observed_output_tokens_per_s=st.none() | st.integers(10, 300),
)


@dataclass
class Book:
    """A generated book: the index built from `offers` in order, and the live state by ref."""

    index: BookIndex
    offers: dict[str, Offer]  # the last offer upserted per ref: what the index must hold
    live: dict[str, OfferLive]


_offer_lists = st.lists(offers(), min_size=10, max_size=40)


@st.composite
def books(draw: st.DrawFn) -> Book:
    """At least ten offers (refs repeat, so later ones replace earlier), idle or not."""
    posted = draw(_offer_lists)
    index = BookIndex()
    latest: dict[str, Offer] = {}
    for offer in posted:
        index.upsert(offer)
        latest[offer.ref] = offer
    refs = sorted(latest)
    live = draw(st.dictionaries(st.sampled_from(refs), lives, max_size=len(refs) // 2))
    return Book(index, latest, live)


def _subset(values: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(values), min_size=1)


_few_tokens = st.sampled_from((0, 1, 2, 3))
requirements = st.builds(
    Requirements,
    model=st.sampled_from((*MODELS, "auto", "auto", "absent")),
    # Small token counts make equal rank costs (and so the tie rule) common.
    input_tokens=_few_tokens | st.integers(0, 1_500) | st.integers(0, 9_000),
    max_tokens=st.none() | _few_tokens | st.integers(0, 600) | st.integers(0, 5_000),
    min_quality=rarely(st.sampled_from((40, 70, 90))),
    max_ttft_ms=rarely(st.integers(50, 2_000)),
    min_output_tokens_per_s=rarely(st.integers(10, 300)),
    features=rarely(st.frozensets(st.sampled_from(FEATURE_LIST), max_size=2)).map(
        lambda f: f or frozenset()
    ),
    quantizations=rarely(_subset(QUANTS)),
    providers_only=rarely(_subset(PROVIDERS)),
    providers_ignore=rarely(st.frozensets(st.sampled_from(PROVIDERS), max_size=1)).map(
        lambda p: p or frozenset()
    ),
    region=rarely(st.sampled_from(REGIONS)),
    max_cost=rarely(st.integers(0, 3_000_000).map(Nanos)),
    expected_output_tokens=st.none() | st.integers(0, 3_000),
)
"""Requirements; most constraints are off most of the time, so that offers often qualify."""
