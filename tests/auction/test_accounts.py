"""Client keys and budgets against a real Redis: auth, holds, settlement, expiry, rollover."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pytest
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
from auction.errors import BudgetExceeded, InvalidApiKey, InvalidRequest, NotFound
from auction.holds import SETTLED_KEEP_MS
from auction.keys import Keys
from clearing.money import Nanos

USD = 10**9
T = TypeVar("T")


def ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0, milli: int = 0
) -> int:
    """Epoch ms of a UTC date and time: ms(2025, 1, 31, 23, 59, 59, 999)."""
    when = datetime(year, month, day, hour, minute, sec, tzinfo=UTC)
    return int(when.timestamp()) * 1000 + milli


@dataclass
class FakeClock:
    now: int

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ms(2025, 3, 14, 12, 0, 0, 0))


@pytest.fixture
def accounts(redis_client: aioredis.Redis, key_prefix: str, clock: FakeClock) -> Accounts:
    return Accounts(redis_client, Keys(key_prefix), clock=clock)


async def _all_values(client: aioredis.Redis, prefix: str) -> str:
    """Everything stored under the prefix, to look for secrets that should not be there."""
    out = ""
    async for key in client.scan_iter(match=f"{prefix}:*"):
        kind = await client.type(key)
        if kind == b"hash":
            out += repr(await client.hgetall(key))
        elif kind == b"zset":
            out += repr(await client.zrange(key, 0, -1))
    return out


# -- keys ---------------------------------------------------------------------------------------
async def test_a_key_is_issued_once_and_stored_only_as_a_hash(
    accounts: Accounts, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    record, token = await accounts.create_key("alice", Nanos(5 * USD), "day")
    assert token.startswith("sk-auc-") and len(token) >= len("sk-auc-") + 32
    assert (record.name, record.budget, record.period, record.revoked) == (
        "alice", 5 * USD, "day", False,
    )  # fmt: skip
    assert await accounts.authenticate(token) == record
    assert token not in await _all_values(redis_client, key_prefix)
    _, other = await accounts.create_key("bob", Nanos(1), "total")
    assert other != token


@pytest.mark.parametrize("bad", [None, "", "sk-auc-", "nonsense", "sk-auc-" + "A" * 43])
async def test_missing_malformed_or_unknown_keys_are_refused(
    accounts: Accounts, bad: str | None
) -> None:
    await accounts.create_key("alice", Nanos(1), "day")
    with pytest.raises(InvalidApiKey):
        await accounts.authenticate(bad)


async def test_names_are_unique_and_checked(accounts: Accounts) -> None:
    await accounts.create_key("alice", Nanos(1), "day")
    with pytest.raises(InvalidRequest, match="already exists"):
        await accounts.create_key("alice", Nanos(2), "month")
    for name in ["", "-x", "a b", "x" * 65, "é"]:
        with pytest.raises(InvalidRequest):
            await accounts.create_key(name, Nanos(1), "day")
    assert [r.budget for r in await accounts.list_keys()] == [1]


@pytest.mark.parametrize(
    ("budget", "period"), [(-1, "day"), (2**53, "day"), (True, "day"), (1, "week"), (1, "")]
)
async def test_bad_budgets_and_periods_are_refused(
    accounts: Accounts, budget: int, period: str
) -> None:
    with pytest.raises(InvalidRequest):
        await accounts.create_key("alice", Nanos(budget), period)  # type: ignore[arg-type]  # deliberately wrong


async def test_revoke_stops_the_key_and_tells_every_process(
    accounts: Accounts, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    record, token = await accounts.create_key("alice", Nanos(USD), "day")
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(Keys(key_prefix).control_channel())
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        revoked = await accounts.revoke("alice")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert revoked.revoked
    assert message is not None
    assert json.loads(message["data"]) == {
        "type": "key_revoked", "key_id": record.key_id, "name": "alice",
    }  # fmt: skip
    with pytest.raises(InvalidApiKey):
        await accounts.authenticate(token)
    with pytest.raises(InvalidApiKey):
        await accounts.hold(record.key_id, "h", Nanos(1), 1000)
    assert [(r.name, r.revoked) for r in await accounts.list_keys()] == [("alice", True)]
    await accounts.revoke("alice")  # twice is harmless
    with pytest.raises(NotFound):
        await accounts.revoke("nobody")


async def test_list_keys_shows_records_without_secrets(accounts: Accounts) -> None:
    _, t1 = await accounts.create_key("bob", Nanos(2), "month")
    _, t2 = await accounts.create_key("alice", Nanos(1), "day")
    listed = await accounts.list_keys()
    assert [r.name for r in listed] == ["alice", "bob"]
    assert t1 not in repr(listed) and t2 not in repr(listed)


async def test_set_budget_changes_budget_and_a_new_period_starts_from_zero(
    accounts: Accounts,
) -> None:
    record, _ = await accounts.create_key("alice", Nanos(100), "day")
    await accounts.hold(record.key_id, "h1", Nanos(60), 60_000)
    await accounts.settle(record.key_id, "h1", Nanos(60))
    assert (await accounts.set_budget("alice", Nanos(200))).budget == 200
    assert (await accounts.account(record.key_id)).spent == 60
    changed = await accounts.set_budget("alice", Nanos(300), "month")
    assert (changed.budget, changed.period) == (300, "month")
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.remaining) == (0, 300)
    with pytest.raises(NotFound):
        await accounts.set_budget("nobody", Nanos(1))
    with pytest.raises(InvalidRequest):
        await accounts.set_budget("alice", Nanos(1), "week")  # type: ignore[arg-type]  # deliberately wrong


# -- holds --------------------------------------------------------------------------------------
async def test_a_hold_that_does_not_fit_says_the_worst_case_and_what_remains(
    accounts: Accounts,
) -> None:
    record, _ = await accounts.create_key("alice", Nanos(USD), "day")
    await accounts.hold(record.key_id, "h1", Nanos(600_000_000), 60_000)
    with pytest.raises(BudgetExceeded) as info:
        await accounts.hold(record.key_id, "h2", Nanos(400_000_001), 60_000)
    assert info.value.http_status == 402
    assert "$0.400000001" in info.value.message and "$0.400000" in info.value.message
    await accounts.hold(record.key_id, "h3", Nanos(400_000_000), 60_000)  # an exact fit is fine
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.held, snap.remaining) == (0, USD, 0)


async def test_hold_arguments_are_checked(accounts: Accounts) -> None:
    record, _ = await accounts.create_key("alice", Nanos(USD), "day")
    for hold_id, amount, ttl in [("", 1, 1), ("h", -1, 1), ("h", 1, 0), ("x" * 201, 1, 1)]:
        with pytest.raises(InvalidRequest):
            await accounts.hold(record.key_id, hold_id, Nanos(amount), ttl)
    with pytest.raises(InvalidApiKey):
        await accounts.hold("no-such-key", "h", Nanos(1), 1000)


async def test_fifty_concurrent_holds_on_a_budget_for_ten(
    accounts: Accounts,
) -> None:
    record, _ = await accounts.create_key("alice", Nanos(10 * 7_000), "total")

    async def one(i: int) -> bool:
        try:
            await accounts.hold(record.key_id, f"h{i}", Nanos(7_000), 60_000)
        except BudgetExceeded:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert sum(results) == 10
    snap = await accounts.account(record.key_id)
    assert (snap.held, snap.remaining) == (70_000, 0)


def _hold_in_process(
    url: str, prefix: str, key_id: str, ids: list[str], barrier: object, out: object
) -> None:
    """Child process: wait for the others, then try every hold at once; report the successes."""

    async def run() -> list[str]:
        client = aioredis.Redis.from_url(url)
        accounts = Accounts(client, Keys(prefix))  # the scripts read Redis TIME here

        async def one(hold_id: str) -> str | None:
            try:
                await accounts.hold(key_id, hold_id, Nanos(7_000), 60_000)
            except BudgetExceeded:
                return None
            return hold_id

        try:
            return [h for h in await asyncio.gather(*(one(h) for h in ids)) if h]
        finally:
            await client.aclose()

    barrier.wait(timeout=30)  # type: ignore[attr-defined]  # a multiprocessing Barrier
    out.put(asyncio.run(run()))  # type: ignore[attr-defined]  # a multiprocessing Queue


async def test_fifty_holds_from_three_processes_on_a_budget_for_ten(
    redis_client: aioredis.Redis, redis_url: str, key_prefix: str
) -> None:
    accounts = Accounts(redis_client, Keys(key_prefix))
    record, _ = await accounts.create_key("alice", Nanos(10 * 7_000), "total")
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    chunks = [[f"p{p}-h{i}" for i in range(p, 50, 3)] for p in range(3)]
    procs = [
        ctx.Process(
            target=_hold_in_process, args=(redis_url, key_prefix, record.key_id, c, barrier, out)
        )
        for c in chunks
    ]
    for proc in procs:
        proc.start()
    won: list[str] = []
    try:
        for _ in procs:
            won += await asyncio.to_thread(out.get, True, 45)
    except queue.Empty:
        pytest.fail("a child process did not report")
    finally:
        for proc in procs:
            proc.join(timeout=10)
    assert len(won) == 10 and len(set(won)) == 10
    snap = await accounts.account(record.key_id)
    assert (snap.held, snap.remaining) == (70_000, 0)
    assert all(proc.exitcode == 0 for proc in procs)


# -- settle and release -------------------------------------------------------------------------
async def test_settle_is_idempotent_and_capped_at_the_hold(accounts: Accounts) -> None:
    record, _ = await accounts.create_key("alice", Nanos(1000), "day")
    await accounts.hold(record.key_id, "h1", Nanos(300), 60_000)
    assert await accounts.settle(record.key_id, "h1", Nanos(120)) == 120
    assert await accounts.settle(record.key_id, "h1", Nanos(250)) == 120  # changes nothing
    repeat = await accounts.settle_detail(record.key_id, "h1", Nanos(1))
    assert (repeat.status, repeat.charged) == ("repeat", 120)
    await accounts.hold(record.key_id, "h2", Nanos(300), 60_000)
    capped = await accounts.settle_detail(record.key_id, "h2", Nanos(999))
    assert (capped.status, capped.charged, capped.capped, capped.counted) == (
        "settled", 300, True, True,
    )  # fmt: skip
    snap = await accounts.account(record.key_id)
    assert (snap.spent, snap.held, snap.remaining) == (420, 0, 580)
    with pytest.raises(InvalidRequest, match="already used"):
        await accounts.hold(record.key_id, "h1", Nanos(1), 60_000)


async def test_release_returns_the_hold_and_is_idempotent(accounts: Accounts) -> None:
    record, _ = await accounts.create_key("alice", Nanos(1000), "day")
    await accounts.hold(record.key_id, "h1", Nanos(1000), 60_000)
    await accounts.hold(record.key_id, "h1", Nanos(1000), 60_000)  # a retried hold: no change
    with pytest.raises(InvalidRequest):
        await accounts.hold(record.key_id, "h1", Nanos(5), 60_000)
    assert await accounts.release(record.key_id, "h1") is True
    assert await accounts.release(record.key_id, "h1") is False
    assert (await accounts.account(record.key_id)).remaining == 1000
    late = await accounts.settle_detail(record.key_id, "h1", Nanos(10))
    assert (late.status, late.charged) == ("no_hold", 0)
    assert (await accounts.account(record.key_id)).spent == 0


async def test_an_expired_hold_gives_its_budget_back(accounts: Accounts, clock: FakeClock) -> None:
    record, _ = await accounts.create_key("alice", Nanos(1000), "total")
    await accounts.hold(record.key_id, "crashed", Nanos(1000), 5_000)
    clock.now += 4_999
    with pytest.raises(BudgetExceeded):
        await accounts.hold(record.key_id, "h2", Nanos(1), 5_000)
    clock.now += 1
    assert (await accounts.account(record.key_id)).held == 0
    await accounts.hold(record.key_id, "h2", Nanos(1000), 5_000)
    assert await accounts.settle(record.key_id, "crashed", Nanos(10)) == 0


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


# -- a state machine against a reference model ----------------------------------------------------
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
