"""Settlements after the answer: readers wait, Redis hiccups are retried, shutdown drains."""

from __future__ import annotations

import asyncio
import logging

import pytest

from auction.pending import PendingSettlements


async def test_readers_wait_for_the_keys_settlements_only() -> None:
    pending = PendingSettlements()
    release = asyncio.Event()
    done: list[str] = []

    async def slow() -> None:
        await release.wait()
        done.append("k1")

    pending.start("k1", "clr_1", slow)
    pending.start("k2", "clr_2", lambda: asyncio.sleep(0))
    await asyncio.wait_for(pending.settled("k2"), 1)  # another key's settlement is not waited for
    await pending.settled("nobody")
    assert len(pending) == 1
    waiter = asyncio.ensure_future(pending.settled("k1"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    release.set()
    await asyncio.wait_for(waiter, 1)
    assert done == ["k1"] and len(pending) == 0


async def test_redis_away_is_retried_until_it_lands() -> None:
    pending = PendingSettlements(retry_delays_s=(0.001, 0.001, 0.001))
    tries: list[int] = []

    async def flaky() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("Redis connection lost")

    pending.start("k", "clr_1", flaky)
    await pending.settled("k")
    assert len(tries) == 3


async def test_it_gives_up_after_the_retries_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    pending = PendingSettlements(retry_delays_s=(0.001,))
    tries: list[int] = []

    async def down() -> None:
        tries.append(1)
        raise ConnectionError("refused")

    async def broken() -> None:
        raise ValueError("a bug")

    with caplog.at_level(logging.WARNING, logger="auction.pending"):
        pending.start("k", "clr_down", down)
        pending.start("k", "clr_bug", broken)
        await pending.settled("k")
    assert len(tries) == 2  # the first try and one retry; a bug is not retried
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("clr_down" in m and "failed 2 times" in m for m in errors)
    assert any("clr_bug" in m for m in errors)
    assert len(pending) == 0


async def test_drain_waits_then_cancels_what_is_late() -> None:
    pending = PendingSettlements()
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    async def stuck() -> None:
        await asyncio.Event().wait()

    pending.start("a", "clr_q", quick)
    pending.start("b", "clr_s", stuck)
    await pending.drain(timeout_s=0.2)
    assert finished == ["quick"] and len(pending) == 0
    await pending.drain()  # nothing left: returns at once
