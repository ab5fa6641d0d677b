"""A catalogue model's own offer carries the catalogue's facts unchanged."""

from __future__ import annotations

from auction.catalogue import default_catalogue
from clearing.money import PriceMicros


def test_a_models_offer_has_its_catalogue_facts() -> None:
    info = default_catalogue()["gpt-4o"]
    offer = info.offer(
        "acme", "o1", PriceMicros(1), PriceMicros(2), PriceMicros(3), concurrency=5, ttl_ms=9
    )
    assert (offer.provider, offer.offer_id, offer.model) == ("acme", "o1", "gpt-4o")
    assert (offer.input_price, offer.output_price, offer.cached_input_price) == (1, 2, 3)
    assert (offer.concurrency, offer.ttl_ms, offer.seq) == (5, 9, 0)
    assert offer.quality == info.quality
    assert offer.context_window == info.context_window
    assert offer.max_output_tokens == info.max_output_tokens
    assert offer.features == info.features
