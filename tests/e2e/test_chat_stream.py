"""Streaming through the marketplace with the OpenAI SDK: text, usage, cost, and broken streams."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from auction.ledger import Ledger
from bidders.simulated.behaviour import SimConfig
from tests.e2e.conftest import Marketplace

MODEL = "llama-3.1-70b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "tell me about markets"}]


async def one_seller(market: Marketplace, config: SimConfig | None = None) -> None:
    await market.add_sim("acme", config)
    await market.post(market.offer("acme", "a1", prices=("0.40", "0.90")))


def cost_of(prompt: int, completion: int) -> Decimal:
    return (prompt * Decimal("0.40") + completion * Decimal("0.90")) / 1_000_000


async def test_stream_with_usage_reports_the_cost_in_the_final_chunk(market: Marketplace) -> None:
    await one_seller(market)
    key = await market.add_key("alice")
    response = await market.client(key).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    assert response.headers["x-auction-provider"] == "acme"
    assert response.headers["x-auction-offer"] == "a1"
    assert "x-auction-clearing-id" in response.headers
    chunks = [c async for c in response.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    auction = final.model_extra["auction"]  # type: ignore[index]
    expected = cost_of(final.usage.prompt_tokens, final.usage.completion_tokens)
    assert Decimal(auction["cost_usd"]) == expected
    assert auction["clearing_id"] == response.headers["x-auction-clearing-id"]
    assert auction["output_tokens"] == final.usage.completion_tokens == 12
    assert all("auction" not in (c.model_extra or {}) for c in chunks[:-1])
    account = await market.account(key)
    assert Decimal(str(account["spent_usd"])) == expected
    assert await market.in_flight(market.offer("acme", "a1")) == 0


async def test_stream_without_usage_puts_the_auction_on_the_last_choice_chunk(
    market: Marketplace,
) -> None:
    await one_seller(market)
    client = market.client(await market.add_key("bob"))
    stream = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)  # naive `chunk.choices[0]` code keeps working
    assert all(c.usage is None for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length"
    assert Decimal(last.model_extra["auction"]["cost_usd"]) > 0  # type: ignore[index]


async def test_a_client_that_leaves_mid_stream_pays_for_what_was_streamed(
    market: Marketplace,
) -> None:
    await one_seller(market, SimConfig(output_tokens_per_s=100, reply_tokens=200))
    key = await market.add_key("carol")
    stream = await market.client(key).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True
    )
    received = 0
    async for chunk in stream:
        received += 1 if chunk.choices and chunk.choices[0].delta.content else 0
        if received == 5:
            break
    await stream.close()
    offer = market.offer("acme", "a1")
    ledger = Ledger(market.market.redis, market.market.keys)
    for _ in range(200):  # bounded: 2 s for the server to notice and settle
        entries = [e async for _, e in ledger.read()]
        if entries and await market.in_flight(offer) == 0:
            break
        await asyncio.sleep(0.01)
    [entry] = entries
    assert 5 <= entry.output_tokens < 100  # what was streamed, estimated; not the whole reply
    assert entry.cost > 0
    account = await market.account(key)
    assert Decimal(str(account["held_usd"])) == 0
    assert Decimal(str(account["spent_usd"])) == Decimal(entry.cost) / 10**9
    assert await market.in_flight(offer) == 0


@pytest.mark.parametrize("fault", ["drop_stream", "stream_error"])
async def test_a_failure_after_the_first_byte_ends_with_an_error_event(
    market: Marketplace, fault: str
) -> None:
    sim = await market.add_sim("acme", SimConfig(output_tokens_per_s=200))  # chunks one by one
    sim.faults.add(fault)  # type: ignore[arg-type]
    await market.add_sim("backup")
    await market.post(
        market.offer("acme", "a1", prices=("0.40", "0.90")),
        market.offer("backup", "b1", prices=("0.50", "1.00")),
    )
    key = await market.add_key("dave")
    stream = await market.client(key).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=20, stream=True
    )
    texts = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts)  # the first part did reach the client: no failover after that
    assert "provider failed during the stream" in caught.value.message
    assert await market.in_flight(market.offer("acme", "a1")) == 0
    account = await market.account(key)
    assert Decimal(str(account["held_usd"])) == 0
    assert Decimal(str(account["spent_usd"])) > 0  # what was streamed is paid for
    assert market.market.broker.parts.health.state("acme/a1").fails == 1  # type: ignore[union-attr]
