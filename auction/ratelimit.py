"""Per-key request rate limits, shared by every server process through Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from auction.commands import Cmd, Script, send_one
from auction.errors import InvalidRequest, RateLimited
from auction.keys import Keys

WINDOW_MS = 60_000
RATE_HIT = Script("rate_hit")


def rate_hit_command(keys: Keys, key_id: str, limit_per_minute: int, now_ms: int) -> Cmd:
    """The `rate_hit` script for one request (for a batch, or `RateLimiter.hit`)."""
    window, elapsed = divmod(now_ms, WINDOW_MS)
    return RATE_HIT.command(
        [keys.rate(key_id, window), keys.rate(key_id, window - 1)],
        [limit_per_minute, elapsed, WINDOW_MS],
    )


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a request may go ahead; if not, how long until one would be allowed."""

    allowed: bool
    retry_after_ms: int


def rate_limited(limit_per_minute: int, retry_after_ms: int) -> RateLimited:
    """The refusal of a request over the key's limit, with Retry-After in whole seconds."""
    seconds = max(1, -(-retry_after_ms // 1000))
    return RateLimited(
        f"rate limit of {limit_per_minute} requests per minute reached; retry in {seconds} s",
        headers={"retry-after": str(seconds)},
    )


class RateLimiter:
    """A sliding window per key, estimated from this minute's and the last minute's counters.

    The estimate weighs the last minute's count by how much of it still lies inside the sliding
    minute (as Cloudflare's limiter does): no burst of twice the limit at a window edge, and two
    small counters per key instead of a log of every request. Windows follow `clock` (epoch ms);
    the servers' clocks are assumed to agree to well within a minute.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, clock: Callable[[], int] = _wall_ms):
        self._redis = redis
        self._keys = keys
        self._clock = clock

    async def hit(self, key_id: str, limit_per_minute: int) -> RateDecision:
        """Count one request for the key if it is within the limit; refused ones do not count."""
        if isinstance(limit_per_minute, bool) or not isinstance(limit_per_minute, int):
            raise InvalidRequest("limit_per_minute must be a whole number")
        if limit_per_minute < 1:
            raise InvalidRequest("limit_per_minute must be at least 1")
        cmd = rate_hit_command(self._keys, key_id, limit_per_minute, self._clock())
        allowed, retry = cast(list[int], await send_one(self._redis, cmd))
        return RateDecision(bool(allowed), int(retry))

    async def enforce(self, key_id: str, limit_per_minute: int) -> None:
        """`hit`, raising when refused.

        Raises:
            RateLimited: with a Retry-After header in whole seconds (rounded up).
        """
        decision = await self.hit(key_id, limit_per_minute)
        if not decision.allowed:
            raise rate_limited(limit_per_minute, decision.retry_after_ms)
