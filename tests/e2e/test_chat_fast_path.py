"""The raw ASGI chat endpoint: body limits and errors as the rest of the API renders them, and
settlement after the answer that the key's own reads never miss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx

from tests.e2e.conftest import MarketFactory, Marketplace

MODEL = "llama-3.1-70b-instruct"


async def chat_market(start_market: MarketFactory) -> tuple[Marketplace, str]:
    market = await start_market(max_body_bytes=4096)
    await market.add_sim("acme")
    await market.post(market.offer("acme", "a1", prices=("0.50", "1.00")))
    return market, await market.add_key("alice", "1")


async def test_bodies_over_the_limit_get_413_whether_announced_or_streamed(
    start_market: MarketFactory,
) -> None:
    market, key = await chat_market(start_market)
    headers = {"authorization": f"Bearer {key}"}

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with httpx.AsyncClient(base_url=market.admin.base_url, headers=headers) as http:
        announced = await http.post("/v1/chat/completions", content=b" " * 5000)
        streamed = await http.post("/v1/chat/completions", content=chunked())
        unauthenticated = await http.post(
            "/v1/chat/completions", json={}, headers={"authorization": "Bearer nope"}
        )
        malformed = await http.post("/v1/chat/completions", content=b"{not json")
    for reply in (announced, streamed):
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"]["code"] == "request_too_large"
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "invalid_api_key"
    assert malformed.status_code == 400
    assert malformed.json()["error"] == {
        "message": "the body is not valid JSON",
        "type": "invalid_request_error",
        "code": "invalid_request",
        "param": None,
    }
    assert Decimal(str((await market.account(key))["spent_usd"])) == 0


async def test_the_keys_reads_right_after_answers_see_every_charge(
    start_market: MarketFactory,
) -> None:
    market, key = await chat_market(start_market)
    client = market.client(key)
    costs = Decimal(0)
    for _ in range(5):
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        costs += Decimal(raw.headers["x-auction-cost-usd"])
        clearing = await market.admin.get(
            f"/v1/clearings/{raw.headers['x-auction-clearing-id']}",
            headers={"authorization": f"Bearer {key}"},
        )
        assert clearing.json()["outcome"] == "completed"
        account = await market.account(key)  # at once: it waits for this key's settlements
        assert Decimal(str(account["spent_usd"])) == costs
        assert Decimal(str(account["held_usd"])) == 0
    assert await market.in_flight(market.offer("acme", "a1")) == 0
