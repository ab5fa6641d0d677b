"""Settlement: the exact charge for the tokens used, never above the hold."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from clearing.money import Nanos, PriceMicros
from clearing.settle import charge, usage_picos
from clearing.types import Candidate, Offer, Usage

OFFER = Offer(
    provider="acme",
    offer_id="o",
    model="m",
    input_price=PriceMicros(590_000),  # $0.59 per Mtok
    output_price=PriceMicros(790_000),
    cached_input_price=PriceMicros(300_000),
    concurrency=1,
    quality=80,
    context_window=100_000,
    max_output_tokens=1_000,
    features=frozenset(),
    seq=0,
)
HOLD = Candidate(OFFER, rank_cost_picos=10**12, worst_case=Nanos(10**9), expected=Nanos(1))


def test_usage_at_the_offers_prices() -> None:
    usage = Usage(input_tokens=812, output_tokens=240, cached_input_tokens=200)
    assert usage_picos(OFFER, usage) == 612 * 590_000 + 200 * 300_000 + 240 * 790_000
    assert charge(HOLD, usage) == 610_680  # 610,680,000 pico-USD
    assert charge(HOLD, Usage(input_tokens=1, output_tokens=0)) == 590  # 590,000 pico-USD
    assert charge(HOLD, Usage(input_tokens=0, output_tokens=0, cached_input_tokens=0)) == 0
    odd = replace(OFFER, input_price=PriceMicros(1_500))  # 1,500 pico-USD a token
    assert charge(replace(HOLD, offer=odd), Usage(input_tokens=1, output_tokens=0)) == 2


def test_odd_reports_never_charge_negative_or_beyond_the_prompt() -> None:
    assert usage_picos(OFFER, Usage(input_tokens=-5, output_tokens=-1)) == 0
    over = Usage(input_tokens=10, output_tokens=0, cached_input_tokens=50)
    assert usage_picos(OFFER, over) == 10 * 300_000


def test_ratio_and_cap() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=0)
    second = replace(HOLD, ratio_num=3, ratio_den=2)
    assert charge(second, usage) == 885_000  # 590,000,000 × 3 / 2 pico-USD
    assert charge(replace(second, worst_case=Nanos(800_000)), usage) == 800_000


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(1, 50),
    st.integers(0, 10**7),
)
def test_charge_never_exceeds_the_hold(
    prompt: int, output: int, cached: int, num: int, hold: int
) -> None:
    cand = replace(HOLD, worst_case=Nanos(hold), ratio_num=num + 1, ratio_den=num)
    usage = Usage(input_tokens=prompt, output_tokens=output, cached_input_tokens=cached)
    amount = charge(cand, usage)
    assert 0 <= amount <= hold
    exact = usage_picos(OFFER, usage) * (num + 1)
    assert amount == min(hold, -(-exact // (num * 1000)))
