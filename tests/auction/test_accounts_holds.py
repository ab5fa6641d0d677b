"""Budget holds against a real Redis: fit, concurrency, settle, release and expiry."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue

import pytest
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.errors import BudgetExceeded, InvalidApiKey, InvalidRequest
from auction.keys import Keys
from clearing.money import Nanos
from tests.auction.accounts_kit import USD, FakeClock


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
