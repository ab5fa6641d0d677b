"""Under concurrency: a budget is never overspent, and an offer's capacity is never oversold."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from typing import Any

import httpx
from openai import APIStatusError, AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from auction.book import Book
from auction.keys import Keys
from auction.ledger import Ledger
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from tests.e2e.conftest import ADMIN_TOKEN, Marketplace, make_offer, server_processes, settings_for

MODEL = "llama-3.1-70b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def test_parallel_requests_never_spend_past_the_budget(market: Marketplace) -> None:
    await market.add_sim("acme")
    # Output at $1/Mtok, input at $0.000001/Mtok: 10 output tokens cost 10,000 nano-USD and any
    # prompt rounds up to 1 more, so the worst case held (max_tokens 10) is exactly the charge.
    await market.post(market.offer("acme", "a1", prices=("0.000001", "1"), concurrency=100))
    key = await market.add_key("alice", budget_usd="0.00010001")  # ten requests' worth
    client = market.client(key)

    async def one() -> int:
        try:
            await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
        except APIStatusError as exc:
            assert exc.body["code"] == "budget_exceeded"  # type: ignore[index]
            return exc.status_code
        return 200

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    assert statuses.count(200) == 10
    assert statuses.count(402) == 40
    account = await market.account(key)
    assert Decimal(str(account["spent_usd"])) == Decimal("0.00010001")
    assert Decimal(str(account["held_usd"])) == 0
    ledger = Ledger(market.market.redis, market.market.keys)
    assert sum([e.cost async for _, e in ledger.read()]) == 100_010
    assert await market.in_flight(market.offer("acme", "a1")) == 0


async def test_two_server_processes_never_oversell_an_offer(
    redis_url: str, key_prefix: str, redis_client: Any
) -> None:
    settings = settings_for(redis_url, key_prefix)
    paced = SimConfig(output_tokens_per_s=100, reply_tokens=15, capacity=2)
    async with (
        SimulatedProvider("openai", paced) as scarce,
        SimulatedProvider("openai") as plenty,
        contextlib.AsyncExitStack() as stack,
    ):
        urls = await asyncio.to_thread(stack.enter_context, server_processes(settings, 2))
        admin = await stack.enter_async_context(
            httpx.AsyncClient(base_url=urls[0], headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        )
        for name, sim in (("scarce", scarce), ("plenty", plenty)):
            reply = await admin.post(
                "/v1/admin/providers",
                json={"name": name, "api": "openai", "base_url": sim.base_url},
            )
            assert reply.status_code == 200, reply.text
        reply = await admin.post("/v1/admin/keys", json={"name": "k", "budget_usd": "10"})
        key = reply.json()["api_key"]
        market = _CatalogueOnly()
        await Book(redis_client, Keys(key_prefix)).upsert(
            "test-session",
            [
                make_offer(market, "scarce", "s", prices=("0.10", "0.20"), concurrency=2),  # type: ignore[arg-type]
                make_offer(market, "plenty", "p", prices=("0.90", "0.90"), concurrency=100),  # type: ignore[arg-type]
            ],
        )
        clients = [AsyncOpenAI(base_url=u + "/v1", api_key=key, max_retries=0) for u in urls]
        for client in clients:
            stack.push_async_callback(client.close)
            await _wait_for_offers(client, 2)

        async def one(n: int) -> str:
            response = await clients[n % 2].chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO
            )
            return response.headers["x-auction-provider"]

        winners = await asyncio.gather(*(one(n) for n in range(16)))
    assert scarce.stats.max_in_flight <= 2
    assert scarce.stats.over_capacity_events == 0
    assert winners.count("scarce") >= 2  # the scarce offer was used, and the rest overflowed
    assert winners.count("plenty") >= 1
    assert scarce.stats.requests == winners.count("scarce")


class _CatalogueOnly:
    """Enough of a Market for `make_offer`: the catalogue."""

    def __init__(self) -> None:
        from auction.catalogue import default_catalogue

        self.catalogue = default_catalogue()


async def _wait_for_offers(client: AsyncOpenAI, count: int) -> None:
    for _ in range(200):  # bounded: 4 s for the server's replica to follow the book
        models = await client.models.list()
        if sum(m.model_extra["auction"]["offers"] for m in models.data) == count:  # type: ignore[index]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server never saw the offers")
