"""The price rules: pay-as-ask, second price by the next other provider, and exact amounts."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from clearing.money import Nanos, PriceMicros
from clearing.prices import (
    DEFAULT_EXPECTED_OUTPUT,
    candidate,
    enough,
    expected_output_tokens,
    ratios,
    scaled_nanos,
)
from clearing.rank import Ranked
from clearing.types import Offer, Requirements

BASE = Offer(
    provider="a",
    offer_id="o",
    model="m",
    input_price=PriceMicros(1_000_000),
    output_price=PriceMicros(4_000_000),
    cached_input_price=PriceMicros(1),
    concurrency=1,
    quality=80,
    context_window=100_000,
    max_output_tokens=1_000,
    features=frozenset(),
    seq=0,
)


def row(provider: str, cost: int, n: int = 0) -> Ranked:
    offer = replace(BASE, provider=provider, offer_id=f"o{n}", seq=n)
    return (cost, n, offer.ref, offer)


def test_pay_as_ask_is_one_to_one() -> None:
    prefix = [row("a", 10), row("b", 20, 1)]
    assert ratios("pay_as_ask", prefix, 5) == [(1, 1), (1, 1)]
    assert ratios("second_price", [], 3) == []


def test_second_price_skips_the_same_provider() -> None:
    prefix = [row("a", 10, 0), row("a", 12, 1), row("b", 15, 2), row("b", 30, 3), row("a", 40, 4)]
    assert ratios("second_price", prefix, 5) == [(3, 2), (5, 4), (8, 3), (4, 3), (1, 1)]
    assert ratios("second_price", prefix, 2) == [(3, 2), (5, 4)]
    assert ratios("second_price", [row("a", 0), row("b", 7, 1)], 2) == [(1, 1), (1, 1)]


def test_enough_for_pay_as_ask_is_depth() -> None:
    done = enough("pay_as_ask", 2)
    assert not done([row("a", 1)], 1)
    assert done([row("a", 1), row("a", 2, 1)], 2)


def test_enough_for_second_price_needs_another_provider_after_the_last_ranked() -> None:
    done = enough("second_price", 2)
    rows = [row("a", 1, 0), row("b", 2, 1), row("b", 3, 2), row("b", 4, 3), row("c", 5, 4)]
    assert not done(rows, 1)
    assert not done(rows, 2)
    assert not done(rows, 4)  # b/3 and b/4 are b again: the next price for b/2 is unknown
    assert done(rows, 5)


def test_expected_output() -> None:
    req = Requirements(model="m", input_tokens=10)
    assert expected_output_tokens(req, BASE) == DEFAULT_EXPECTED_OUTPUT
    assert expected_output_tokens(replace(req, max_tokens=100), BASE) == 100
    assert expected_output_tokens(replace(req, expected_output_tokens=5_000), BASE) == 1_000
    assert expected_output_tokens(replace(req, expected_output_tokens=7), BASE) == 7


def test_candidate_amounts() -> None:
    req = Requirements(model="m", input_tokens=1_000, max_tokens=500)
    cost = 1_000 * 1_000_000 + 500 * 4_000_000  # 3,000,000,000 pico-USD = $0.003
    plain = candidate(req, (cost, 0, BASE.ref, BASE), (1, 1))
    assert (plain.worst_case, plain.expected) == (3_000_000, 2_024_000)
    second = candidate(req, (cost, 0, BASE.ref, BASE), (4, 3))
    assert second.worst_case == 4_000_000
    assert second.expected == scaled_nanos(2_024_000_000, 4, 3) == 2_698_667
    capped = candidate(replace(req, max_cost=Nanos(3_500_000)), (cost, 0, BASE.ref, BASE), (4, 3))
    assert (capped.worst_case, capped.expected) == (3_500_000, 2_698_667)
    tight = candidate(replace(req, max_cost=Nanos(2_000_000)), (cost, 0, BASE.ref, BASE), (4, 3))
    assert tight.expected == tight.worst_case == 2_000_000


@given(st.integers(0, 10**15), st.integers(1, 10**6), st.integers(1, 10**6))
def test_scaled_amounts_round_up_once(picos: int, a: int, b: int) -> None:
    num, den = max(a, b), min(a, b)
    nanos = scaled_nanos(picos, num, den)
    assert nanos * 1000 * den >= picos * num
    assert (nanos - 1) * 1000 * den < picos * num or picos == 0
