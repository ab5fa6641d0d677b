"""Each `auction` constraint, and each one derived from the request, picks the right offer."""

from __future__ import annotations

from typing import Any

import pytest
from openai import APIStatusError
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.e2e.conftest import Marketplace

MODEL = "llama-3.1-70b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
TEXT_ONLY = frozenset({"tools", "json_mode"})


async def three_sellers(market: Marketplace) -> None:
    """cheap: no figures declared; fast: eu, fp8, quick; pricey: us, bf16, slow-ish."""
    for name in ("p1", "p2", "p3"):
        await market.add_sim(name)
    await market.post(
        market.offer("p1", "cheap", prices=("0.10", "0.20"), max_output_tokens=1_000),
        market.offer(
            "p2", "fast", prices=("0.30", "0.60"), ttft_ms=100, output_tokens_per_s=200,
            region="eu", quantization="fp8", features=TEXT_ONLY,
        ),
        market.offer(
            "p3", "pricey", prices=("0.90", "1.80"), ttft_ms=300, output_tokens_per_s=50,
            region="us", quantization="bf16",
        ),
    )  # fmt: skip


CASES: list[tuple[dict[str, Any], dict[str, Any], str | None]] = [
    ({}, {}, "cheap"),
    ({"max_ttft_ms": 200}, {}, "fast"),
    ({"min_output_tokens_per_s": 100}, {}, "fast"),
    ({"providers": {"only": ["p3"]}}, {}, "pricey"),
    ({"providers": {"ignore": ["p1", "p2"]}}, {}, "pricey"),
    ({"quantizations": ["bf16"]}, {}, "pricey"),
    ({"region": "eu"}, {}, "fast"),
    ({}, {"max_tokens": 2_000}, "fast"),  # over cheap's output limit of 1000
    ({"max_cost_usd": "0.01"}, {"max_tokens": 2_000}, "fast"),
    ({}, {"stream": True}, "cheap"),
    ({"region": "eu"}, {"stream": True}, None),  # fast cannot stream
    ({"features": ["tools"]}, {}, "cheap"),
]


@pytest.mark.parametrize(("auction", "body", "winner"), CASES)
async def test_each_constraint_picks_its_offer(
    market: Marketplace, auction: dict[str, Any], body: dict[str, Any], winner: str | None
) -> None:
    await three_sellers(market)
    client = market.client(await market.add_key("alice"))
    body = {"max_tokens": 5, **body}
    if winner is None:
        with pytest.raises(APIStatusError) as caught:
            await client.chat.completions.create(
                model=MODEL, messages=HELLO, extra_body={"auction": auction}, **body
            )
        assert caught.value.status_code == 503
        assert caught.value.body["details"] == {"region": 2, "missing_feature": 1}  # type: ignore[index]
        return
    response = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, extra_body={"auction": auction}, **body
    )
    assert response.headers["x-auction-offer"] == winner
    if body.get("stream"):
        _ = [c async for c in response.parse()]


async def test_tools_need_an_offer_with_tools(market: Marketplace) -> None:
    await market.add_sim("p1")
    await market.post(
        market.offer("p1", "plain", prices=("0.10", "0.20"), features=frozenset({"streaming"})),
        market.offer("p1", "tooled", prices=("0.50", "0.60")),
    )
    client = market.client(await market.add_key("bob"))
    tool: ChatCompletionToolParam = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object"}},
    }
    response = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, tools=[tool], max_tokens=5
    )
    assert response.headers["x-auction-offer"] == "tooled"
    plain = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=5
    )
    assert plain.headers["x-auction-offer"] == "plain"


async def test_a_prompt_too_long_for_an_offer_moves_on(market: Marketplace) -> None:
    await market.add_sim("p1")
    await market.post(
        market.offer("p1", "short", prices=("0.10", "0.20"), context_window=256),
        market.offer("p1", "long", prices=("0.50", "0.60")),
    )
    client = market.client(await market.add_key("carol"))
    prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 400}]
    response = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, max_tokens=5
    )
    assert response.headers["x-auction-offer"] == "long"
