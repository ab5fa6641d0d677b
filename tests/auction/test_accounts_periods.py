"""Budget periods against a real Redis: rollover, total budgets, clock skew, Lua against Python."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.budgets import period_bounds, period_id
from auction.errors import BudgetExceeded
from auction.keys import Keys
from clearing.money import Nanos
from tests.auction.accounts_kit import FakeClock, ms


# -- periods ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("period", "before", "after"),
    [
        ("day", ms(2025, 3, 14, 23, 59, 59, 999), ms(2025, 3, 15, 0, 0, 0, 0)),
        ("month", ms(2025, 1, 31, 23, 59, 59, 999), ms(2025, 2, 1, 0, 0, 0, 0)),
        ("month", ms(2024, 12, 31, 23, 59, 59, 999), ms(2025, 1, 1, 0, 0, 0, 0)),
        ("month", ms(2024, 2, 29, 23, 59, 59, 999), ms(2024, 3, 1, 0, 0, 0, 0)),
    ],
)
async def test_spent_starts_again_at_a_new_period_and_holds_still_count(
    accounts: Accounts, clock: FakeClock, period: str, before: int, after: int
) -> None:
    record, _ = await accounts.create_key("alice", Nanos(1000), period)  # type: ignore[arg-type]  # parametrized
    clock.now = before - 10
    await accounts.hold(record.key_id, "early", Nanos(600), 3_600_000)
    await accounts.settle(record.key_id, "early", Nanos(600))
    clock.now = before
    await accounts.hold(record.key_id, "open", Nanos(300), 3_600_000)
    with pytest.raises(BudgetExceeded):
        await accounts.hold(record.key_id, "x", Nanos(101), 3_600_000)
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.held, snap.resets_ms) == (600, 300, after)
    clock.now = after
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.held, snap.remaining, snap.period_start_ms) == (0, 300, 700, after)
    await accounts.hold(record.key_id, "new", Nanos(700), 3_600_000)
    # The open hold was reserved in the old period: its charge does not count in the new one.
    late = await accounts.settle_detail(record.key_id, "open", Nanos(300))
    assert (late.charged, late.counted) == (300, False)
    assert await accounts.settle(record.key_id, "new", Nanos(50)) == 50
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.held, snap.remaining) == (50, 0, 950)


async def test_a_total_budget_never_resets(accounts: Accounts, clock: FakeClock) -> None:
    record, _ = await accounts.create_key("alice", Nanos(1000), "total")
    await accounts.hold(record.key_id, "h", Nanos(400), 60_000)
    await accounts.settle(record.key_id, "h", Nanos(400))
    clock.now += 400 * 86_400_000
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.period_start_ms, snap.resets_ms) == (400, None, None)


async def test_a_clock_that_steps_back_never_reopens_a_spent_period(
    accounts: Accounts, clock: FakeClock
) -> None:
    record, _ = await accounts.create_key("alice", Nanos(1000), "day")
    clock.now = ms(2025, 3, 15, 0, 0, 0, 5)
    await accounts.hold(record.key_id, "h", Nanos(900), 60_000)
    await accounts.settle(record.key_id, "h", Nanos(900))
    clock.now = ms(2025, 3, 14, 23, 59, 59, 990)  # another server, a little behind
    with pytest.raises(BudgetExceeded):
        await accounts.hold(record.key_id, "h2", Nanos(101), 60_000)


def test_period_bounds_follow_the_utc_calendar() -> None:
    noon = ms(2024, 2, 29, 12, 0, 0, 0)
    assert period_bounds("day", noon) == (ms(2024, 2, 29), ms(2024, 3, 1))
    assert period_bounds("month", noon) == (ms(2024, 2, 1), ms(2024, 3, 1))
    assert period_bounds("month", ms(2025, 12, 31, 23, 59, 59, 999)) == (
        ms(2025, 12, 1), ms(2026, 1, 1),
    )  # fmt: skip
    assert period_bounds("total", noon) == (None, None)
    assert period_id("month", ms(1970, 1, 1)) == 1970 * 12


async def test_lua_and_python_agree_on_every_month_and_day_boundary(
    redis_client: aioredis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    accounts = Accounts(redis_client, Keys(key_prefix), clock=clock)
    month, _ = await accounts.create_key("m", Nanos(0), "month")
    day, _ = await accounts.create_key("d", Nanos(0), "day")
    years = [*range(1970, 2031), *range(2096, 2105)]  # 2000 is a leap year, 2100 is not
    starts = [ms(y, m, 1) for y in years for m in range(1, 13)]
    checked = 0
    for start in starts:
        for now in (start - 1, start):
            clock.now = now
            for record in (month, day):
                await accounts.hold(record.key_id, f"h{now}", Nanos(0), 1)
            stored = await redis_client.hmget(Keys(key_prefix).account(month.key_id), ["period_id"])
            day_stored = await redis_client.hget(Keys(key_prefix).account(day.key_id), "period_id")
            assert stored[0] is not None and day_stored is not None
            assert int(stored[0]) == period_id("month", now), now
            assert int(day_stored) == period_id("day", now), now
            checked += 1
    assert checked == 2 * len(starts)
