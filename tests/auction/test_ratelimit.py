"""Per-key rate limits against a real Redis, shared by separate clients (as by two processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from auction.errors import InvalidRequest, RateLimited
from auction.keys import Keys
from auction.ratelimit import WINDOW_MS, RateLimiter

MINUTE_START = 29_933_000 * WINDOW_MS  # a window boundary in late 2026


@dataclass
class FakeClock:
    now: int

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MINUTE_START + 30_000)


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_two_clients_share_one_limit(
    redis_client: aioredis.Redis,
    second_client: aioredis.Redis,
    key_prefix: str,
    clock: FakeClock,
) -> None:
    one = RateLimiter(redis_client, Keys(key_prefix), clock=clock)
    two = RateLimiter(second_client, Keys(key_prefix), clock=clock)
    decisions = [await (one if i % 2 else two).hit("k1", 5) for i in range(12)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 7
    assert all(d.retry_after_ms > 0 for d in decisions[5:])
    assert (await one.hit("k2", 5)).allowed  # another key has its own limit


async def test_the_last_minute_decays_smoothly_and_retry_after_is_exact(
    redis_client: aioredis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(redis_client, Keys(key_prefix), clock=clock)
    clock.now = MINUTE_START - 1_000
    assert all([(await limiter.hit("k", 5)).allowed for _ in range(5)])
    clock.now = MINUTE_START  # all five still lie inside the sliding minute
    refused = await limiter.hit("k", 5)
    # One slot frees once a fifth of the last window has slid out: 12 s into this one.
    assert (refused.allowed, refused.retry_after_ms) == (False, 12_000)
    clock.now = MINUTE_START + refused.retry_after_ms - 1
    assert not (await limiter.hit("k", 5)).allowed
    clock.now = MINUTE_START + refused.retry_after_ms
    assert (await limiter.hit("k", 5)).allowed
    assert not (await limiter.hit("k", 5)).allowed


async def test_a_full_window_waits_for_the_next_one(
    redis_client: aioredis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(redis_client, Keys(key_prefix), clock=clock)
    for _ in range(4):
        assert (await limiter.hit("k", 4)).allowed
    refused = await limiter.hit("k", 4)  # at 30 s into the window
    # 30 s to the window's end, then a quarter of the window for one of four to slide out.
    assert refused.retry_after_ms == 30_000 + 15_000
    clock.now += refused.retry_after_ms - 1
    assert not (await limiter.hit("k", 4)).allowed
    clock.now += 1
    assert (await limiter.hit("k", 4)).allowed


async def test_enforce_raises_with_retry_after_in_seconds(
    redis_client: aioredis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(redis_client, Keys(key_prefix), clock=clock)
    await limiter.enforce("k", 1)
    with pytest.raises(RateLimited) as info:
        await limiter.enforce("k", 1)
    assert info.value.http_status == 429
    assert info.value.headers == {"retry-after": "90"}  # 30 s left, then the whole window
    for bad in (0, -1, True):
        with pytest.raises(InvalidRequest):
            await limiter.hit("k", bad)


async def test_without_a_clock_it_uses_the_wall_clock(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    limiter = RateLimiter(redis_client, Keys(key_prefix))
    assert (await limiter.hit("k", 1)).allowed
    refused = await limiter.hit("k", 1)
    assert not refused.allowed and 0 < refused.retry_after_ms <= 2 * WINDOW_MS
