"""Client keys against a real Redis: issue, authenticate, names, revoke, list and set a budget."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.errors import InvalidApiKey, InvalidRequest, NotFound
from auction.keys import Keys
from clearing.money import Nanos
from tests.auction.accounts_kit import USD


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
