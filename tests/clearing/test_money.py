"""Exact money parsing and formatting."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearing.money import (
    MoneyError,
    format_price,
    format_usd,
    parse_price,
    parse_usd,
    picos_to_nanos,
)


def test_price_parses_strings_numbers_and_decimals_alike() -> None:
    assert parse_price("0.59") == parse_price(0.59) == parse_price(Decimal("0.59")) == 590_000


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0", "0.0000001", "abc", True, None, [1]])
def test_bad_prices_are_refused(bad: object) -> None:
    with pytest.raises(MoneyError):
        parse_price(bad)


@given(st.integers(min_value=0, max_value=2**53 - 1))
def test_usd_round_trips(nanos: int) -> None:
    assert parse_usd(format_usd(nanos)) == nanos


@given(st.integers(min_value=1, max_value=10**11))
def test_price_round_trips(micros: int) -> None:
    assert parse_price(format_price(micros)) == micros


@given(st.integers(min_value=0, max_value=10**15))
def test_rounding_up_is_tight(picos: int) -> None:
    nanos = picos_to_nanos(picos)
    assert nanos * 1000 >= picos > (nanos - 1) * 1000


@pytest.mark.parametrize("huge", ["1e149", 1.2e149, "1e999999", Decimal("9" * 40)])
def test_numbers_too_large_to_quantize_are_refused_not_raised(huge: object) -> None:
    # Found by schemathesis: POST /v1/admin/keys with budget_usd 1.2e149 was a 500.
    with pytest.raises(MoneyError, match="too large"):
        parse_usd(huge)
    with pytest.raises(MoneyError, match="too large"):
        parse_price(huge)
