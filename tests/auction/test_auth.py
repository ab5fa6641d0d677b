"""Who is calling: the short key cache (revocation wins within its ttl) and the admin token."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from auction.accounts import Accounts
from auction.auth import KeyCache, bearer, check_admin
from auction.errors import InvalidApiKey
from auction.keys import Keys
from clearing.money import Nanos


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("", None), ("Bearer", None), ("Basic abc", None), ("bearer  tok ", "tok")],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


async def test_a_revoked_key_stops_working_once_its_cache_entry_expires(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    accounts = Accounts(redis_client, Keys(key_prefix))
    record, token = await accounts.create_key("alice", Nanos(10**9), "total")
    clock = Clock()
    cache = KeyCache(accounts, ttl_s=1.0, clock=clock)
    assert (await cache.authenticate(f"Bearer {token}")).key_id == record.key_id
    await accounts.revoke("alice")
    clock.now += 0.5
    assert (await cache.authenticate(f"Bearer {token}")).key_id == record.key_id  # cached
    clock.now += 0.6
    with pytest.raises(InvalidApiKey):
        await cache.authenticate(f"Bearer {token}")
    with pytest.raises(InvalidApiKey):
        await cache.authenticate(None)


async def test_forget_drops_a_key_at_once(redis_client: aioredis.Redis, key_prefix: str) -> None:
    accounts = Accounts(redis_client, Keys(key_prefix))
    record, token = await accounts.create_key("bob", Nanos(10**9), "total")
    cache = KeyCache(accounts, clock=Clock())
    await cache.authenticate(f"Bearer {token}")
    await accounts.revoke("bob")
    cache.forget(record.key_id)
    with pytest.raises(InvalidApiKey):
        await cache.authenticate(f"Bearer {token}")


def test_check_admin() -> None:
    secret = SecretStr("s3cret")
    check_admin(secret, "Bearer s3cret")
    for header in (None, "Bearer wrong", "s3cret", "Bearer s3cre"):
        with pytest.raises(InvalidApiKey, match="missing or wrong"):
            check_admin(secret, header)
    with pytest.raises(InvalidApiKey, match="disabled"):
        check_admin(None, "Bearer s3cret")
