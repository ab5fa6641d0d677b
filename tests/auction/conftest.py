"""Fixtures shared by the auction tests: a fake clock and Accounts on the test Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.keys import Keys
from tests.auction.accounts_kit import FakeClock, ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ms(2025, 3, 14, 12, 0, 0, 0))


@pytest.fixture
def accounts(redis_client: aioredis.Redis, key_prefix: str, clock: FakeClock) -> Accounts:
    return Accounts(redis_client, Keys(key_prefix), clock=clock)
