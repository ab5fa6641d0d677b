"""The offer's wire form: exact prices, the interface's nesting, and a lossless round trip."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auction.offer_codec import (
    OfferCodec,
    offer_body_text,
    offer_from_json,
    offer_from_text,
    offer_to_json,
)
from clearing.money import MAX_PRICE_MICROS, PriceMicros
from clearing.types import FEATURES, QUANTIZATIONS, Offer
from tests.examples import EXAMPLE_OFFER

_prices = st.integers(min_value=1, max_value=MAX_PRICE_MICROS).map(PriceMicros)
_names = st.text(min_size=1, max_size=20)
_counts = st.integers(min_value=1, max_value=10**12)

offers = st.builds(
    Offer,
    provider=_names,
    offer_id=_names,
    model=_names,
    input_price=_prices,
    output_price=_prices,
    cached_input_price=_prices,
    concurrency=_counts,
    quality=st.integers(min_value=0, max_value=100),
    context_window=_counts,
    max_output_tokens=_counts,
    features=st.frozensets(st.sampled_from(sorted(FEATURES))),
    seq=st.integers(min_value=0, max_value=2**53),
    upstream_model=st.text(max_size=20),
    quantization=st.none() | st.sampled_from(sorted(QUANTIZATIONS)),
    tokens_per_minute=st.none() | _counts,
    ttft_ms=st.none() | _counts,
    output_tokens_per_s=st.none() | _counts,
    region=st.none() | _names,
    ttl_ms=_counts,
)


@given(offers)
def test_round_trip_through_json_text(offer: Offer) -> None:
    assert offer_from_json(json.loads(json.dumps(offer_to_json(offer)))) == offer


def test_wire_form_follows_the_interface() -> None:
    offer = replace(EXAMPLE_OFFER, seq=7)
    assert offer_to_json(offer) == {
        "offer_id": "llama-70b-fast",
        "model": "llama-3.1-70b-instruct",
        "provider": "acme",
        "upstream_model": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        "input_usd_per_mtok": "0.59",
        "output_usd_per_mtok": "0.79",
        "cached_input_usd_per_mtok": "0.3",
        "quantization": "fp8",
        "capacity": {"concurrency": 64, "tokens_per_minute": 2_000_000},
        "latency": {"ttft_ms": 250, "output_tokens_per_s": 180},
        "context_window": 131_072,
        "max_output_tokens": 8192,
        "features": ["json_mode", "streaming", "tools"],
        "region": "us",
        "ttl_ms": 15_000,
        "quality": 80,
        "seq": 7,
    }


def test_absent_optionals_are_left_out() -> None:
    offer = Offer(
        provider="p",
        offer_id="o",
        model="m",
        input_price=PriceMicros(1),
        output_price=PriceMicros(2),
        cached_input_price=PriceMicros(1),
        concurrency=1,
        quality=50,
        context_window=1000,
        max_output_tokens=100,
        features=frozenset(),
        seq=1,
    )
    wire = offer_to_json(offer)
    assert wire["capacity"] == {"concurrency": 1}
    assert not {"upstream_model", "quantization", "latency", "region"} & wire.keys()
    assert wire["input_usd_per_mtok"] == "0.000001"


@given(offers)
def test_body_text_is_the_json_of_the_wire_form_without_seq(offer: Offer) -> None:
    body = offer_to_json(offer)
    del body["seq"]
    assert offer_body_text(offer) == json.dumps(body, separators=(",", ":"))


@given(offers, st.integers(min_value=0, max_value=2**53), st.booleans())
def test_stream_text_decodes_alike_whether_written_here_or_not(
    offer: Offer, seq: int, written_here: bool
) -> None:
    codec = OfferCodec()
    body = codec.body(offer) if written_here else offer_body_text(offer)
    stream_text = body[:-1] + f',"seq":{seq}}}'  # as the upsert script splices it
    decoded = codec.decode(stream_text)
    assert decoded == offer_from_json(json.loads(stream_text)) == offer_from_text(stream_text)
    assert decoded.seq == seq


@given(st.lists(st.tuples(offers, _prices, _prices), min_size=1, max_size=6))
def test_codec_bodies_equal_the_plain_encoding_as_prices_move(
    moves: list[tuple[Offer, PriceMicros, PriceMicros]],
) -> None:
    # The codec reuses an offer's text around its prices: re-priced offers, and other offers
    # that share all but a field, must still encode exactly as `offer_body_text` does.
    codec = OfferCodec(max_entries=3)
    for offer, input_price, output_price in moves:
        for version in (offer, replace(offer, input_price=input_price, output_price=output_price),
                        replace(offer, ttl_ms=offer.ttl_ms + 1), offer):  # fmt: skip
            body = codec.body(version)
            assert body == offer_body_text(version)
            assert codec.decode(body[:-1] + ',"seq":7}') == replace(version, seq=7)


def test_codec_memory_is_bounded_and_read_once() -> None:
    codec = OfferCodec(max_entries=2)
    base = offer_from_json(json.loads(offer_body_text_example()))
    texts = [codec.body(replace(base, input_price=PriceMicros(p))) for p in (5, 6, 7)]
    assert len(codec._written) == 2  # the oldest body was forgotten
    for body, price in zip(texts, (5, 6, 7), strict=True):
        assert codec.decode(body[:-1] + ',"seq":1}').input_price == price  # the first by parsing
    assert not codec._written  # each remembered body is read once
    assert codec.decode(texts[2][:-1] + ',"seq":2}').seq == 2  # and again by parsing


def test_a_body_written_twice_is_remembered_for_two_reads() -> None:
    # A bidder alternating between two prices writes each body again before the replica has
    # read the first: both reads are found, and then the body is forgotten.
    codec = OfferCodec()
    base = offer_from_json(json.loads(offer_body_text_example()))
    low, high = replace(base, input_price=PriceMicros(5)), replace(base, input_price=PriceMicros(6))
    versions = (low, high, low)
    texts = [codec.body(version) for version in versions]
    assert len(codec._written) == 2
    for n, (body, version) in enumerate(zip(texts, versions, strict=True)):
        assert codec.decode(body[:-1] + f',"seq":{n}}}') == replace(version, seq=n)
        assert len(codec._written) == (2, 1, 0)[n]  # found each time, then forgotten


def test_a_stream_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TypeError):
        offer_from_text("[1, 2]")


def offer_body_text_example() -> str:
    return (
        '{"offer_id":"o","model":"m","provider":"p","input_usd_per_mtok":"1",'
        '"output_usd_per_mtok":"2","cached_input_usd_per_mtok":"1","capacity":{"concurrency":1},'
        '"context_window":10,"max_output_tokens":5,"features":[],"ttl_ms":1000,"quality":1,'
        '"seq":0}'
    )
