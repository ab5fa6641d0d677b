"""The settlement ledger against a real Redis: written once per clearing, read back whole."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.keys import Keys
from auction.ledger import PAGE, Ledger, Prices, Settlement
from clearing.money import Nanos, PriceMicros


def settlement(clearing_id: str, key_id: str = "key1", cost: int = 670) -> Settlement:
    return Settlement(
        clearing_id=clearing_id,
        key_id=key_id,
        provider="acme",
        offer_id="llama-70b-fast",
        model="llama-3.1-70b-instruct",
        input_tokens=812,
        output_tokens=240,
        cached_input_tokens=100,
        cost=Nanos(cost),
        prices=Prices(PriceMicros(590_000), PriceMicros(790_000), PriceMicros(300_000)),
        ts=1_796_000_000_000,
    )


@pytest.fixture
def ledger(redis_client: aioredis.Redis, key_prefix: str) -> Ledger:
    return Ledger(redis_client, Keys(key_prefix))


async def test_a_clearing_is_written_once(
    ledger: Ledger, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    first = await ledger.append(settlement("c1"))
    again = await ledger.append(dataclasses.replace(settlement("c1"), cost=Nanos(999)))
    assert again == first
    assert await redis_client.xlen(Keys(key_prefix).ledger()) == 1
    assert await ledger.get("c1") == settlement("c1")  # the first entry stands
    assert await ledger.get("c2") is None


async def test_concurrent_appends_of_one_clearing_write_one_entry(
    ledger: Ledger, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    ids = await asyncio.gather(*(ledger.append(settlement("c1")) for _ in range(20)))
    assert len(set(ids)) == 1
    assert await redis_client.xlen(Keys(key_prefix).ledger()) == 1


async def test_entries_read_back_in_order_across_pages(ledger: Ledger) -> None:
    count = PAGE * 2 + 7
    for i in range(count):
        await ledger.append(settlement(f"c{i}", key_id=f"key{i % 3}", cost=i))
    read = [(entry_id, s) async for entry_id, s in ledger.read()]
    assert [s.clearing_id for _, s in read] == [f"c{i}" for i in range(count)]
    assert read[5][1] == settlement("c5", key_id="key2", cost=5)
    after = [s.cost async for _, s in ledger.read(after=read[-3][0])]
    assert after == [count - 2, count - 1]
    mine = [s.cost async for _, s in ledger.read(key_id="key1")]
    assert mine == list(range(1, count, 3))
    assert await ledger.total_for("key1") == sum(range(1, count, 3))
    assert await ledger.total_for("nobody") == 0


def test_a_settlement_refuses_negative_or_inexact_amounts() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(settlement("c1"), cost=Nanos(-1))
    with pytest.raises(ValueError):
        dataclasses.replace(settlement("c1"), output_tokens=1.5)  # type: ignore[arg-type]  # deliberately wrong


async def test_the_ledger_reconciles_with_what_keys_spent(
    ledger: Ledger, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    accounts = Accounts(redis_client, Keys(key_prefix))
    record, _ = await accounts.create_key("alice", Nanos(10_000), "month")
    for i, (hold, charge) in enumerate([(3_000, 1_234), (2_000, 2_500), (1_000, 0)]):
        await accounts.hold(record.key_id, f"h{i}", Nanos(hold), 60_000)
        charged = await accounts.settle(record.key_id, f"h{i}", Nanos(charge))
        await ledger.append(settlement(f"c{i}", key_id=record.key_id, cost=charged))
        await accounts.settle(record.key_id, f"h{i}", Nanos(charge))  # a retried settle
        await ledger.append(settlement(f"c{i}", key_id=record.key_id, cost=charged))
    snap = await accounts.account(record.key_id)
    assert await ledger.total_for(record.key_id) == snap.spent == 1_234 + 2_000 + 0
