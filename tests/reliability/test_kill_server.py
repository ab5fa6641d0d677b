"""A server process SIGKILLed with requests in flight: what it held comes back by itself."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.book import Book
from auction.keys import Keys
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from tests.e2e.conftest import settings_for
from tests.reliability.conftest import (
    admin_setup,
    assert_reconciled,
    key_ids,
    offer_for,
    processes,
    read_books,
)

FAST, SLOW = "gpt-4o-mini", "llama-3.1-70b-instruct"
TIMEOUT_MS = 3_000


def body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


async def test_sigkill_with_requests_in_flight(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    fast = SimulatedProvider("openai", SimConfig())
    slow = SimulatedProvider("openai", SimConfig(ttft_ms=2_500))
    await fast.start()
    await slow.start()
    keys = Keys(key_prefix)
    book = Book(redis_client, keys)
    settings = settings_for(
        redis_url, key_prefix, default_timeout_ms=TIMEOUT_MS, reservation_grace_ms=0
    )
    try:
        with processes(settings, 1) as [(proc, url)]:
            _, api = await admin_setup(
                url, {"fast": fast.base_url, "slow": slow.base_url}, {"alice": "5"}
            )
            quick, sluggish = offer_for("fast", "f1", FAST), offer_for("slow", "s1", SLOW)
            await book.upsert("s", [quick, sluggish])
            auth = {"authorization": f"Bearer {api['alice']}"}
            async with httpx.AsyncClient(base_url=url, headers=auth, timeout=10) as http:
                for _ in range(100):  # bounded: the server's replica picks the offers up
                    if (
                        await http.post("/v1/chat/completions", json=body(FAST))
                    ).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
                done = [await http.post("/v1/chat/completions", json=body(FAST)) for _ in range(4)]
                assert [r.status_code for r in done] == [200] * 4
                flying = [
                    asyncio.create_task(http.post("/v1/chat/completions", json=body(SLOW)))
                    for _ in range(6)
                ]
                for _ in range(100):  # bounded: until all six hold their reservations
                    if await book.in_flight(SLOW, sluggish.ref) == 6:
                        break
                    await asyncio.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
                results = await asyncio.gather(*flying, return_exceptions=True)
            assert all(isinstance(r, httpx.HTTPError) for r in results), results
        [alice] = await key_ids(redis_client, keys, ["alice"])
        accounts = Accounts(redis_client, keys)
        assert await book.in_flight(SLOW, sluggish.ref) == 6  # the dead process held them
        assert (await accounts.account(alice)).held > 0
        deadline = time.monotonic() + TIMEOUT_MS / 1000 + 3
        while await book.in_flight(SLOW, sluggish.ref) or (await accounts.account(alice)).held:
            assert time.monotonic() < deadline, "reservations or holds outlived their TTL"
            await asyncio.sleep(0.1)
        books = await read_books(redis_client, keys, [alice])
        assert len(books.ledger) == 5  # the warm-up and the four: nothing of the killed six
        assert_reconciled(books)
    finally:
        await fast.stop()
        await slow.stop()
