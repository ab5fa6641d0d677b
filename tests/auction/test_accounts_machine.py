"""Holds, settles, releases and time checked step by step against a reference model (stateful)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TypeVar

import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from auction.accounts import Accounts
from auction.budgets import Period, period_bounds, period_id
from auction.errors import BudgetExceeded
from auction.holds import SETTLED_KEEP_MS
from auction.keys import Keys
from clearing.money import Nanos
from tests.auction.accounts_kit import FakeClock, ms

T = TypeVar("T")

START_MS = ms(2025, 3, 14, 23, 0, 0, 0)


class BudgetMachine(RuleBasedStateMachine):
    """Holds, settles, releases and the passing of time, checked against a few lines of Python.

    The model keeps live holds (amount, expiry, period), the period's spent and what each settle
    charged; the real store must agree after every step.
    """

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.prefix = prefix
        self.client = self.runner.run(self._connect(url))
        self.clock = FakeClock(START_MS)
        self.accounts = Accounts(self.client, Keys(prefix), clock=self.clock)
        self.key_id = ""
        self.period: Period = "total"
        self.budget = 0
        self.live: dict[str, tuple[int, int, int]] = {}  # hold id -> amount, expires, period
        self.settled: dict[str, tuple[int, int]] = {}  # hold id -> charged, settled at
        self.spent, self.spent_pid = 0, -1
        self.next_id = 0
        self.taken = self.charged = self.returned = 0  # every nano held ends charged or returned

    @staticmethod
    async def _connect(url: str) -> aioredis.Redis:
        return aioredis.Redis.from_url(url)

    def _run(self, coro: Coroutine[object, object, T]) -> T:
        return self.runner.run(coro)

    def _purge(self) -> None:
        for hold_id, (amount, expires, _) in list(self.live.items()):
            if expires <= self.clock.now:
                del self.live[hold_id]
                self.returned += amount

    def _roll(self) -> int:
        pid = period_id(self.period, self.clock.now)
        if pid > self.spent_pid:
            self.spent, self.spent_pid = 0, pid
        return self.spent_pid

    holds = Bundle("holds")

    @initialize(budget=st.integers(0, 10_000), period=st.sampled_from(["day", "month", "total"]))
    def create(self, budget: int, period: Period) -> None:
        self.budget, self.period = budget, period
        record, _ = self._run(self.accounts.create_key("k", Nanos(budget), period))
        self.key_id = record.key_id

    @rule(target=holds, amount=st.integers(0, 4_000), ttl=st.integers(1, 20_000))
    def hold(self, amount: int, ttl: int) -> str:
        return self._hold(amount, ttl)

    @rule(target=holds, amount=st.integers(0, 4_000), before=st.integers(1, 10_000))
    def hold_across_a_period_end(self, amount: int, before: int) -> str:
        """A hold taken just before the period ends, still live just after it."""
        self.approach_the_next_period(before)
        hold_id = self._hold(amount, before + 10_000)
        self.clock.now += before
        return hold_id

    def _hold(self, amount: int, ttl: int) -> str:
        hold_id = f"h{self.next_id}"
        self.next_id += 1
        self._purge()
        pid = self._roll()
        fits = self.spent + sum(a for a, _, _ in self.live.values()) + amount <= self.budget
        try:
            self._run(self.accounts.hold(self.key_id, hold_id, Nanos(amount), ttl))
        except BudgetExceeded:
            assert not fits
            return hold_id
        assert fits
        self.live[hold_id] = (amount, self.clock.now + ttl, pid)
        self.taken += amount
        return hold_id

    @rule(hold_id=holds, charge=st.integers(0, 5_000))
    def settle(self, hold_id: str, charge: int) -> None:
        outcome = self._run(self.accounts.settle_detail(self.key_id, hold_id, Nanos(charge)))
        if hold_id in self.settled:
            assert (outcome.status, outcome.charged) == ("repeat", self.settled[hold_id][0])
            return
        self._purge()
        if hold_id not in self.live:
            assert (outcome.status, outcome.charged) == ("no_hold", 0)
            return
        amount, _, pid = self.live.pop(hold_id)
        charged = min(charge, amount)
        counted = self._roll() == pid
        self.spent += charged if counted else 0
        self.settled[hold_id] = (charged, self.clock.now)
        # A successful settle forgets marks older than the retention (a retry that late is moot).
        for old_id, (_, at) in list(self.settled.items()):
            if at <= self.clock.now - SETTLED_KEEP_MS:
                del self.settled[old_id]
        self.charged, self.returned = self.charged + charged, self.returned + amount - charged
        assert (outcome.status, outcome.charged, outcome.counted) == ("settled", charged, counted)

    @rule(hold_id=holds)
    def release(self, hold_id: str) -> None:
        removed = self._run(self.accounts.release(self.key_id, hold_id))
        entry = self.live.pop(hold_id, None)
        assert removed == (entry is not None)
        self.returned += entry[0] if entry else 0

    @rule(ms_=st.integers(1, 30_000))
    def wait(self, ms_: int) -> None:
        self.clock.now += ms_

    @rule(before=st.integers(0, 10_000))
    def approach_the_next_period(self, before: int) -> None:
        """Jump to just before the key's period ends (the next day for a total budget)."""
        _, end = period_bounds("day" if self.period == "total" else self.period, self.clock.now)
        assert end is not None
        self.clock.now = end - before

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not self.key_id:
            return
        snap = self._run(self.accounts.account(self.key_id))
        now = self.clock.now
        live = sum(a for a, expires, _ in self.live.values() if expires > now)
        spent = self.spent if self.spent_pid >= period_id(self.period, now) else 0
        assert (snap.spent, snap.held) == (spent, live)
        assert snap.remaining >= 0 and snap.spent + snap.held <= self.budget
        assert snap.remaining == self.budget - snap.spent - snap.held
        expired = sum(a for a, expires, _ in self.live.values() if expires <= now)
        assert self.taken == self.charged + self.returned + live + expired

    def teardown(self) -> None:
        async def clean() -> None:
            keys = [k async for k in self.client.scan_iter(match=f"{self.prefix}:*")]
            if keys:
                await self.client.delete(*keys)
            await self.client.aclose()

        self._run(clean())
        self.runner.close()


def test_holds_and_settlements_add_up(redis_url: str, key_prefix: str) -> None:
    class Machine(BudgetMachine):
        def __init__(self) -> None:
            super().__init__(redis_url, key_prefix)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow explain
        ),
    )
