"""Pricing strategies: what a bidder asks for an offer now, given the time, its fills and its load.

Prices are integer micro-USD per Mtok and ratios integer parts per million, so a strategy never
produces a price with more than six decimals and never touches a binary float. Time is always an
argument (`now_ms`, Unix epoch milliseconds), so every strategy is testable without a clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from bidders.messages import Fill
from clearing.money import MAX_PRICE_MICROS, PriceMicros

Prices = tuple[PriceMicros, PriceMicros]
"""(input price, output price), micro-USD per million tokens."""

PPM = 1_000_000  # a ratio of 1.0 in parts per million
MS_PER_HOUR = 3_600_000


class PricingStrategy(Protocol):
    """Sets one offer's prices; told about fills and, when the provider knows it, its load."""

    def prices(self, now_ms: int) -> Prices:
        """The prices to quote now."""
        ...

    def on_fill(self, fill: Fill, now_ms: int) -> None:
        """A request against the offer settled."""
        ...

    def on_load(self, in_flight: int, capacity: int, now_ms: int) -> None:
        """The provider measured `in_flight` requests against `capacity` slots."""
        ...


def scale(price: PriceMicros, ratio_ppm: int) -> PriceMicros:
    """`price × ratio`, rounded down, but never below one micro-USD nor above the price cap."""
    return PriceMicros(min(MAX_PRICE_MICROS, max(1, price * ratio_ppm // PPM)))


def _check_prices(*prices: int) -> None:
    if any(not 0 < p <= MAX_PRICE_MICROS for p in prices):
        raise ValueError("prices must be positive micro-USD per Mtok within the price cap")


class StaticPrices:
    """The same prices always."""

    def __init__(self, input_price: PriceMicros, output_price: PriceMicros) -> None:
        _check_prices(input_price, output_price)
        self._prices: Prices = (input_price, output_price)

    def prices(self, now_ms: int) -> Prices:
        return self._prices

    def on_fill(self, fill: Fill, now_ms: int) -> None:
        pass

    def on_load(self, in_flight: int, capacity: int, now_ms: int) -> None:
        pass


class TimeOfDaySchedule:
    """Base prices times a multiplier for the hour of the day, in UTC."""

    def __init__(
        self, input_price: PriceMicros, output_price: PriceMicros, hourly_ppm: Sequence[int]
    ) -> None:
        _check_prices(input_price, output_price)
        if len(hourly_ppm) != 24 or any(r <= 0 for r in hourly_ppm):
            raise ValueError("hourly_ppm needs 24 positive multipliers, one per UTC hour")
        self._base = (input_price, output_price)
        self._hourly = tuple(hourly_ppm)

    @classmethod
    def off_peak(
        cls,
        input_price: PriceMicros,
        output_price: PriceMicros,
        *,
        discount_ppm: int,
        start_hour: int,
        end_hour: int,
    ) -> TimeOfDaySchedule:
        """A discount from `start_hour` up to (not including) `end_hour` UTC; may wrap midnight."""
        if not 0 <= discount_ppm < PPM or not (0 <= start_hour < 24 and 0 <= end_hour < 24):
            raise ValueError("discount_ppm must be in [0, 1e6) and hours in 0..23")
        span = (end_hour - start_hour) % 24
        off = {(start_hour + i) % 24 for i in range(span)}
        hourly = [PPM - discount_ppm if hour in off else PPM for hour in range(24)]
        return cls(input_price, output_price, hourly)

    def prices(self, now_ms: int) -> Prices:
        ratio = self._hourly[now_ms // MS_PER_HOUR % 24]
        return scale(self._base[0], ratio), scale(self._base[1], ratio)

    def on_fill(self, fill: Fill, now_ms: int) -> None:
        pass

    def on_load(self, in_flight: int, capacity: int, now_ms: int) -> None:
        pass


class UtilizationPricing:
    """The floor when idle, rising toward the ceiling as the offer's load nears its capacity.

    Load is a level in [0, 1e6] ppm. A measurement (`on_load`) sets it; each fill adds one slot's
    worth (1e6 / capacity), because a fill is demand the bidder saw. Between events the level
    halves every `half_life_ms`, so an idle offer drifts back to the floor. The price is
    floor + (ceiling - floor) × level², convex so it stays near the floor until the offer is busy;
    the level is first rounded down to `step_ppm` so prices move in steps, not on every tick.
    """

    def __init__(
        self,
        floor: Prices,
        ceiling: Prices,
        *,
        capacity: int,
        half_life_ms: int = 30_000,
        step_ppm: int = 50_000,
    ) -> None:
        _check_prices(*floor, *ceiling)
        if floor[0] > ceiling[0] or floor[1] > ceiling[1]:
            raise ValueError("the floor must not be above the ceiling")
        if capacity < 1 or half_life_ms < 1 or not 1 <= step_ppm <= PPM:
            raise ValueError("capacity and half_life_ms must be positive, step_ppm in 1..1e6")
        self._floor, self._ceiling = floor, ceiling
        self._capacity = capacity
        self._half_life_ms = half_life_ms
        self._step_ppm = step_ppm
        self._level_ppm = 0  # the level as of `_at_ms`; `level_ppm(now)` decays it
        self._at_ms = 0

    def level_ppm(self, now_ms: int) -> int:
        """The decayed load level now (a pure function of the last event and `now_ms`)."""
        elapsed = max(0, now_ms - self._at_ms)
        halvings, rest = divmod(elapsed, self._half_life_ms)
        level = self._level_ppm >> min(halvings, 63)
        # Within one half-life, 2**-x is approximated by 1 - x/2: exact at both ends.
        return level - level * rest // (2 * self._half_life_ms)

    def prices(self, now_ms: int) -> Prices:
        level = self.level_ppm(now_ms)
        level -= level % self._step_ppm
        weight = level * level // PPM
        return (
            PriceMicros(self._floor[0] + (self._ceiling[0] - self._floor[0]) * weight // PPM),
            PriceMicros(self._floor[1] + (self._ceiling[1] - self._floor[1]) * weight // PPM),
        )

    def on_fill(self, fill: Fill, now_ms: int) -> None:
        self._set(self.level_ppm(now_ms) + PPM // self._capacity, now_ms)

    def on_load(self, in_flight: int, capacity: int, now_ms: int) -> None:
        self._set(max(0, in_flight) * PPM // max(1, capacity), now_ms)

    def _set(self, level_ppm: int, now_ms: int) -> None:
        self._level_ppm = min(PPM, level_ppm)
        self._at_ms = now_ms


class RandomWalk:
    """Base prices times a seeded random walk: the demo's moving market.

    Every `interval_ms` the multiplier moves by a whole number of ppm drawn uniformly from
    [-step_ppm, step_ppm], clamped to [floor_ppm, ceiling_ppm]. The same seed and the same times
    give the same prices. After a long pause at most `MAX_CATCH_UP` steps are taken at once.
    """

    MAX_CATCH_UP = 1_000

    def __init__(
        self,
        input_price: PriceMicros,
        output_price: PriceMicros,
        *,
        seed: int,
        step_ppm: int = 20_000,
        interval_ms: int = 1_000,
        floor_ppm: int = PPM // 2,
        ceiling_ppm: int = 2 * PPM,
    ) -> None:
        _check_prices(input_price, output_price)
        if step_ppm < 0 or interval_ms < 1 or not 0 < floor_ppm <= PPM <= ceiling_ppm:
            raise ValueError("need step_ppm >= 0, interval_ms >= 1, floor <= 1e6 <= ceiling")
        self._base = (input_price, output_price)
        self._rng = random.Random(seed)
        self._step, self._interval = step_ppm, interval_ms
        self._bounds = (floor_ppm, ceiling_ppm)
        self._ratio = PPM
        self._tick: int | None = None

    def prices(self, now_ms: int) -> Prices:
        tick = now_ms // self._interval
        if self._tick is None:
            self._tick = tick
        for _ in range(min(max(0, tick - self._tick), self.MAX_CATCH_UP)):
            moved = self._ratio + self._rng.randint(-self._step, self._step)
            self._ratio = min(self._bounds[1], max(self._bounds[0], moved))
        self._tick = max(tick, self._tick)
        return scale(self._base[0], self._ratio), scale(self._base[1], self._ratio)

    def on_fill(self, fill: Fill, now_ms: int) -> None:
        pass

    def on_load(self, in_flight: int, capacity: int, now_ms: int) -> None:
        pass
