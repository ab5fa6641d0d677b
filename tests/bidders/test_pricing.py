"""Pricing strategies: static, time of day, utilization and the seeded random walk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidders.messages import Fill
from bidders.pricing import (
    PPM,
    Prices,
    PricingStrategy,
    RandomWalk,
    StaticPrices,
    TimeOfDaySchedule,
    UtilizationPricing,
    scale,
)
from clearing.money import MAX_PRICE_MICROS, Nanos, PriceMicros

HOUR = 3_600_000
DAY = 24 * HOUR
P = PriceMicros


def fill(offer_id: str = "o1") -> Fill:
    return Fill(offer_id, "clr", "gpt-4o", 100, 50, Nanos(1_000), 0)


def test_every_strategy_meets_the_protocol() -> None:
    strategies: list[PricingStrategy] = [
        StaticPrices(P(1), P(2)),
        TimeOfDaySchedule(P(1), P(2), [PPM] * 24),
        UtilizationPricing((P(1), P(2)), (P(3), P(4)), capacity=2),
        RandomWalk(P(1), P(2), seed=1),
    ]
    for strategy in strategies:
        strategy.on_fill(fill(), 0)
        strategy.on_load(1, 2, 0)
        assert all(p >= 1 for p in strategy.prices(0))


def test_static_prices_never_move() -> None:
    static = StaticPrices(P(590_000), P(790_000))
    static.on_fill(fill(), 5)
    static.on_load(10, 10, 5)
    assert static.prices(0) == static.prices(10**12) == (590_000, 790_000)


@pytest.mark.parametrize("bad", [(0, 1), (1, -1), (MAX_PRICE_MICROS + 1, 1)])
def test_prices_must_be_positive_and_capped(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        StaticPrices(P(bad[0]), P(bad[1]))


def test_scale_rounds_down_but_stays_positive_and_capped() -> None:
    assert scale(P(999), 500_000) == 499
    assert scale(P(1), 1) == 1
    assert scale(P(MAX_PRICE_MICROS), 2 * PPM) == MAX_PRICE_MICROS


def test_hourly_schedule_uses_the_utc_hour() -> None:
    hourly = [PPM] * 24
    hourly[3] = 700_000
    hourly[23] = 1_500_000
    schedule = TimeOfDaySchedule(P(1_000_000), P(2_000_000), hourly)
    assert schedule.prices(0) == (1_000_000, 2_000_000)
    assert schedule.prices(3 * HOUR) == (700_000, 1_400_000)
    assert schedule.prices(4 * HOUR - 1) == (700_000, 1_400_000)
    assert schedule.prices(4 * HOUR) == (1_000_000, 2_000_000)
    assert schedule.prices(DAY * 400 + 23 * HOUR + 59_000) == (1_500_000, 3_000_000)


def test_off_peak_discount_wraps_midnight() -> None:
    schedule = TimeOfDaySchedule.off_peak(
        P(1_000_000), P(2_000_000), discount_ppm=300_000, start_hour=22, end_hour=6
    )
    discounted = (700_000, 1_400_000)
    assert [schedule.prices(h * HOUR) == discounted for h in range(24)] == [
        h >= 22 or h < 6 for h in range(24)
    ]


@pytest.mark.parametrize(
    ("hourly", "kwargs"),
    [([PPM] * 23, None), ([PPM] * 23 + [0], None), (None, {"discount_ppm": PPM})],
)
def test_bad_schedules_are_refused(hourly: list[int] | None, kwargs: dict[str, int] | None) -> None:
    with pytest.raises(ValueError):
        if hourly is not None:
            TimeOfDaySchedule(P(1), P(1), hourly)
        else:
            TimeOfDaySchedule.off_peak(P(1), P(1), start_hour=0, end_hour=1, **(kwargs or {}))


FLOOR: Prices = (P(1_000_000), P(2_000_000))
CEILING: Prices = (P(3_000_000), P(6_000_000))


def test_utilization_is_at_the_floor_when_idle_and_the_ceiling_when_full() -> None:
    pricing = UtilizationPricing(FLOOR, CEILING, capacity=4, step_ppm=1)
    assert pricing.prices(0) == FLOOR
    pricing.on_load(4, 4, 1_000)
    assert pricing.prices(1_000) == CEILING
    pricing.on_load(2, 4, 1_000)  # half full: weight 1/4 (convex)
    assert pricing.prices(1_000) == (1_500_000, 3_000_000)
    pricing.on_load(9, 4, 1_000)  # over capacity is full
    assert pricing.prices(1_000) == CEILING


def test_utilization_decays_by_half_life_when_idle() -> None:
    pricing = UtilizationPricing(FLOOR, CEILING, capacity=4, half_life_ms=10_000, step_ppm=1)
    pricing.on_load(4, 4, 0)
    assert pricing.level_ppm(0) == PPM
    assert pricing.level_ppm(10_000) == PPM // 2
    assert pricing.level_ppm(20_000) == PPM // 4
    assert PPM // 2 < pricing.level_ppm(5_000) < PPM
    levels = [pricing.level_ppm(t) for t in range(0, 200_000, 1_000)]
    assert levels == sorted(levels, reverse=True)
    assert pricing.prices(10**9) == FLOOR


def test_fills_raise_the_price_and_it_is_bounded() -> None:
    pricing = UtilizationPricing(FLOOR, CEILING, capacity=4, half_life_ms=60_000, step_ppm=1)
    seen = [pricing.prices(0)]
    for t in range(1, 10):
        pricing.on_fill(fill(), t)
        seen.append(pricing.prices(t))
    inputs = [p[0] for p in seen]
    assert inputs == sorted(inputs) and inputs[0] < inputs[4]
    assert seen[-1] == CEILING  # nine fills on four slots saturate


def test_utilization_moves_in_steps() -> None:
    pricing = UtilizationPricing(FLOOR, CEILING, capacity=100, step_ppm=100_000)
    pricing.on_load(19, 100, 0)  # 0.19 rounds down to 0.1: weight 0.01
    assert pricing.prices(0) == (1_020_000, 2_040_000)
    pricing.on_load(11, 100, 0)
    assert pricing.prices(0) == (1_020_000, 2_040_000)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(0, 10**6)), max_size=30))
def test_utilization_stays_within_floor_and_ceiling(events: list[tuple[bool, int, int]]) -> None:
    pricing = UtilizationPricing(FLOOR, CEILING, capacity=8, half_life_ms=1_000)
    now = 0
    for is_fill, load, dt in events:
        now += dt
        if is_fill:
            pricing.on_fill(fill(), now)
        else:
            pricing.on_load(load, 8, now)
        low, high = pricing.prices(now)
        assert FLOOR[0] <= low <= CEILING[0] and FLOOR[1] <= high <= CEILING[1]


def test_utilization_refuses_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="floor"):
        UtilizationPricing(CEILING, FLOOR, capacity=1)
    with pytest.raises(ValueError):
        UtilizationPricing(FLOOR, CEILING, capacity=0)


def test_random_walk_is_seeded_and_moves_once_per_interval() -> None:
    walks = [RandomWalk(P(1_000_000), P(2_000_000), seed=42, interval_ms=1_000) for _ in range(2)]
    series = [[w.prices(t) for t in range(0, 60_000, 250)] for w in walks]
    assert series[0] == series[1]
    distinct = {p for p in series[0]}
    assert len(distinct) > 10
    changes = sum(1 for a, b in zip(series[0], series[0][1:], strict=False) if a != b)
    assert changes <= 60
    other = RandomWalk(P(1_000_000), P(2_000_000), seed=43, interval_ms=1_000)
    assert [other.prices(t) for t in range(0, 60_000, 250)] != series[0]


def test_random_walk_stays_in_its_band_and_keeps_the_price_ratio() -> None:
    walk = RandomWalk(
        P(1_000_000), P(3_000_000), seed=7, step_ppm=200_000, floor_ppm=800_000, ceiling_ppm=PPM
    )
    for t in range(0, 500_000, 1_000):
        low, high = walk.prices(t)
        assert 800_000 <= low <= 1_000_000 and high == 3 * low


def test_random_walk_catches_up_a_bounded_number_of_steps() -> None:
    walk = RandomWalk(P(1_000_000), P(1_000_000), seed=1, step_ppm=0)
    walk.prices(0)
    assert walk.prices(10**15) == (1_000_000, 1_000_000)  # returns promptly
    assert walk.prices(0) == (1_000_000, 1_000_000)  # time going back moves nothing
