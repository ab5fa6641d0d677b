"""Every client error in the interface's shape, and nothing left half-written after any of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import Marketplace

MODEL = "llama-3.1-70b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": MODEL, "messages": HELLO, "max_tokens": 10}


async def seller(market: Marketplace) -> None:
    await market.add_sim("acme")
    await market.post(market.offer("acme", "a1", prices=("1.00", "1.00"), region="us"))


async def post(
    market: Marketplace, body: object, key: str | None, path: str = "/v1/chat/completions"
) -> httpx.Response:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=market.url) as http:
        if isinstance(body, bytes):
            return await http.post(path, content=body, headers=headers)
        return await http.post(path, json=body, headers=headers)


def assert_error(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["code"] == code
    assert {"message", "type", "code", "param"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    return error


async def assert_nothing_held(market: Marketplace, key: str) -> None:
    account = await market.account(key)
    assert (account["spent_usd"], account["held_usd"]) == ("0.000000", "0.000000")
    assert await market.in_flight(market.offer("acme", "a1")) == 0


async def test_keys_missing_unknown_and_revoked_are_401(market: Marketplace) -> None:
    await seller(market)
    assert_error(await post(market, CHAT, None), 401, "invalid_api_key")
    assert_error(await post(market, CHAT, "sk-auc-nope"), 401, "invalid_api_key")
    key = await market.add_key("alice")
    assert (await post(market, CHAT, key)).status_code == 200
    revoked = await market.admin.post("/v1/admin/keys/alice/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    started = time.monotonic()
    while (await post(market, CHAT, key)).status_code == 200:
        assert time.monotonic() - started < 2.0, "a revoked key kept working"
        await asyncio.sleep(0.05)
    assert_error(await post(market, CHAT, key), 401, "invalid_api_key")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"model": MODEL}, "messages"),
        ({**CHAT, "messages": "hi"}, "messages"),
        ({**CHAT, "max_tokens": "ten"}, "max_tokens"),
        ({**CHAT, "model": "no-such-model"}, "model"),
        ({**CHAT, "auction": {"min_quality": 101}}, "auction.min_quality"),
        ({**CHAT, "auction": {"colour": "red"}}, "auction.colour"),
        ({**CHAT, "auction": {"max_cost_usd": "-1"}}, "auction.max_cost_usd"),
        ({**CHAT, "auction": {"timeout_ms": 10**9}}, "auction.timeout_ms"),
        ({**CHAT, "auction": {"features": ["vision"]}}, "auction"),  # llama has no vision
    ],
)
async def test_bad_requests_are_400(market: Marketplace, body: object, param: str | None) -> None:
    await seller(market)
    key = await market.add_key("bob")
    for path in ("/v1/chat/completions", "/v1/quote"):
        error = assert_error(await post(market, body, key, path), 400, "invalid_request")
        assert error["param"] == param
    await assert_nothing_held(market, key)


async def test_a_body_over_the_limit_is_413(start_market: Any) -> None:
    market: Marketplace = await start_market(max_body_bytes=2048)
    await seller(market)
    key = await market.add_key("carol")
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(await post(market, big, key), 413, "request_too_large")
    await assert_nothing_held(market, key)


async def test_over_the_rate_limit_is_429(start_market: Any) -> None:
    market: Marketplace = await start_market(rate_limit_per_minute=2)
    await seller(market)
    key = await market.add_key("dave")
    for _ in range(2):
        assert (await post(market, CHAT, key)).status_code == 200
    reply = await post(market, CHAT, key)
    assert_error(reply, 429, "rate_limited")
    assert int(reply.headers["retry-after"]) >= 1


async def test_no_qualifying_offer_is_503_with_counts(market: Marketplace) -> None:
    await seller(market)
    key = await market.add_key("erin")
    empty = {**CHAT, "model": "llama-3.1-8b-instruct"}
    error = assert_error(await post(market, empty, key), 503, "no_qualifying_offer")
    assert error["details"] == {}
    elsewhere = {**CHAT, "auction": {"region": "eu"}}
    reply = await post(market, elsewhere, key)
    error = assert_error(reply, 503, "no_qualifying_offer")
    assert error["details"] == {"region": 1}
    record = await market.admin.get(
        f"/v1/clearings/{reply.headers['x-auction-clearing-id']}",
        headers={"authorization": f"Bearer {key}"},
    )
    assert record.json()["passed_over"] == [
        {"provider": "acme", "offer_id": "a1", "model": MODEL, "reason": "region"}
    ]
    await assert_nothing_held(market, key)


async def test_worst_case_over_budget_or_max_cost_is_402(market: Marketplace) -> None:
    await seller(market)
    # The worst case is about 25 tokens at $1/Mtok: $0.000025.
    poor = await market.add_key("frank", budget_usd="0.00001")
    assert_error(await post(market, CHAT, poor), 402, "budget_exceeded")
    await assert_nothing_held(market, poor)
    rich = await market.add_key("grace", budget_usd="1")
    capped = {**CHAT, "auction": {"max_cost_usd": "0.00001"}}
    error = assert_error(await post(market, capped, rich), 402, "budget_exceeded")
    assert error["details"] == {"too_expensive": 1}
    assert error["param"] == "auction.max_cost_usd"
    await assert_nothing_held(market, rich)
    fits = {**CHAT, "auction": {"max_cost_usd": "0.0001"}}
    assert (await post(market, fits, rich)).status_code == 200
