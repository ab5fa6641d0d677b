"""A quoted price is read exactly as `parse_price` reads it, fast path or not."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from bidders.offers import OfferInvalid, OfferRules, parse_offer
from clearing.catalogue import parse_catalogue
from clearing.money import MoneyError, parse_price

RULES = OfferRules(
    parse_catalogue([{"id": "m", "quality": 50, "context_window": 1000, "max_output_tokens": 100}]),
    default_ttl_ms=15_000,
    max_ttl_ms=300_000,
)
_decimal_texts = st.from_regex(r"\A[0-9]{0,13}(\.[0-9]{0,8})?\Z")


def _quoted(price: str) -> str:
    offer = {"offer_id": "o", "model": "m", "input_usd_per_mtok": price,
             "output_usd_per_mtok": "1", "capacity": {"concurrency": 1}}  # fmt: skip
    try:
        return str(parse_offer(offer, "p", RULES).input_price)
    except OfferInvalid as exc:
        return f"error: {exc}"


def _expected(price: str) -> str:
    try:
        return str(parse_price(price))
    except MoneyError as exc:
        return f"error: input_usd_per_mtok {exc}"


@given(_decimal_texts | st.text(max_size=12))
@example("0.59")
@example("12")
@example("0")
@example("1.")
@example(".5")
@example("0.0000001")
@example("100000.000001")
@example("\u00b2")
@example(" 1")
def test_a_quoted_price_reads_as_parse_price_reads_it(price: str) -> None:
    assert _quoted(price) == _expected(price)
