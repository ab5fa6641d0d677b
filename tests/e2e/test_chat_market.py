"""The client API end to end with the OpenAI SDK: the cheapest offer wins and is charged exactly."""

from __future__ import annotations

import base64
from decimal import Decimal

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from auction.ledger import Ledger
from tests.e2e.conftest import Marketplace

MODEL = "llama-3.1-70b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


async def two_sellers(market: Marketplace) -> None:
    await market.add_sim("acme")
    await market.add_sim("cheapco")
    await market.post(
        market.offer("acme", "a1", prices=("0.50", "1.00"), ttft_ms=300),
        market.offer("cheapco", "c1", prices=("0.40", "0.90"), ttft_ms=200),
    )


def usd(text: object) -> Decimal:
    return Decimal(str(text))


async def test_cheapest_offer_wins_and_is_charged_at_its_prices(market: Marketplace) -> None:
    await two_sellers(market)
    key = await market.add_key("alice", "1")
    raw = await market.client(key).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=20
    )
    completion = raw.parse()
    assert raw.headers["x-auction-provider"] == "cheapco"
    assert raw.headers["x-auction-offer"] == "c1"
    assert raw.headers["x-auction-model"] == MODEL
    clearing_id = raw.headers["x-auction-clearing-id"]
    assert completion.model == MODEL
    assert completion.choices[0].message.content
    usage = completion.usage
    assert usage is not None
    # Exact: tokens × $/Mtok, from the provider's reported usage.
    expected = usage.prompt_tokens * Decimal("0.40") + usage.completion_tokens * Decimal("0.90")
    expected /= 1_000_000
    auction = completion.model_extra["auction"]  # type: ignore[index]
    assert usd(auction["cost_usd"]) == expected
    assert usd(raw.headers["x-auction-cost-usd"]) == expected
    assert auction["clearing_id"] == clearing_id
    assert auction["provider"] == "cheapco" and auction["offer_id"] == "c1"
    assert (auction["input_usd_per_mtok"], auction["output_usd_per_mtok"]) == ("0.4", "0.9")
    assert auction["price_rule"] == "pay_as_ask"
    assert auction["input_tokens"] == usage.prompt_tokens
    assert auction["output_tokens"] == usage.completion_tokens
    assert auction["attempts"] == 1
    account = await market.account(key)
    assert usd(account["spent_usd"]) == expected
    assert usd(account["held_usd"]) == 0
    entry = await Ledger(market.market.redis, market.market.keys).get(clearing_id)
    assert entry is not None and entry.provider == "cheapco" and entry.cost * 10**-9 > 0
    assert await market.in_flight(market.offer("cheapco", "c1")) == 0


async def test_auto_picks_the_cheapest_model_that_meets_the_constraints(
    market: Marketplace,
) -> None:
    await market.add_sim("acme")
    await market.post(
        market.offer("acme", "big", "llama-3.1-405b-instruct", ("2.00", "3.00")),
        market.offer("acme", "small", "llama-3.1-8b-instruct", ("0.05", "0.08")),
        market.offer("acme", "mid", "llama-3.1-70b-instruct", ("0.50", "0.80")),
    )
    client = market.client(await market.add_key("bob"))
    cheap = await client.chat.completions.create(model="auto", messages=HELLO, max_tokens=5)
    assert cheap.model == "llama-3.1-8b-instruct"
    strong = await client.chat.completions.create(
        model="auto", messages=HELLO, max_tokens=5, extra_body={"auction": {"min_quality": 70}}
    )
    assert strong.model == "llama-3.1-70b-instruct"


async def test_tools_images_and_json_mode_pass_through_the_sdk(market: Marketplace) -> None:
    await market.add_sim("acme")
    no_vision = frozenset({"tools", "json_mode", "streaming"})
    await market.post(
        market.offer("acme", "cheap-text", "gpt-4o", ("0.10", "0.20"), features=no_vision),
        market.offer("acme", "full", "gpt-4o", ("2.50", "10.00")),
    )
    client = market.client(await market.add_key("carol"))
    tool: ChatCompletionToolParam = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    called = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[tool],
        tool_choice="required",
    )
    assert called.choices[0].message.tool_calls
    assert called.model_extra["auction"]["offer_id"] == "cheap-text"  # type: ignore[index]
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
    seen = await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
        max_tokens=10,
    )
    assert seen.model_extra["auction"]["offer_id"] == "full"  # type: ignore[index]
    structured = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, response_format={"type": "json_object"}, max_tokens=50
    )
    assert structured.choices[0].message.content


async def test_quote_lists_every_offer_with_its_reason(market: Marketplace) -> None:
    await two_sellers(market)
    await market.post(market.offer("acme", "slow", prices=("0.01", "0.01"), ttft_ms=5_000))
    key = await market.add_key("dave")
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 100,
            "auction": {"max_ttft_ms": 1_000}}  # fmt: skip
    async with httpx.AsyncClient(base_url=market.url) as http:
        reply = await http.post("/v1/quote", json=body, headers={"authorization": f"Bearer {key}"})
    assert reply.status_code == 200, reply.text
    quote = reply.json()
    assert quote["winner"]["offer_id"] == "c1"
    worst = (quote["input_tokens"] * Decimal("0.40") + 100 * Decimal("0.90")) / 1_000_000
    assert usd(quote["worst_case_cost_usd"]) == worst.quantize(Decimal("1e-9"))
    assert usd(quote["estimated_cost_usd"]) <= worst
    rows = {row["offer_id"]: row for row in quote["offers"]}
    assert rows["c1"]["qualifies"] and rows["c1"]["rank"] == 1
    assert rows["a1"]["qualifies"] and rows["a1"]["rank"] == 2
    assert rows["slow"] == {**rows["slow"], "qualifies": False, "reason": "too_slow"}
    assert quote["passed_over_counts"] == {"too_slow": 1}
    # A quote reserves nothing.
    assert await market.in_flight(market.offer("cheapco", "c1")) == 0


async def test_models_lists_live_models_with_best_prices(market: Marketplace) -> None:
    await two_sellers(market)
    await market.post(market.offer("acme", "a2", prices=("0.45", "0.70")))
    client = market.client(await market.add_key("erin"))
    models = await client.models.list()
    [entry] = [m for m in models.data if m.id == MODEL]
    assert [m.id for m in models.data] == [MODEL]
    best = entry.model_extra["auction"]  # type: ignore[index]
    assert (best["best_input_usd_per_mtok"], best["best_output_usd_per_mtok"]) == ("0.4", "0.7")
    assert best["offers"] == 3 and best["providers"] == 2


async def test_clearing_records_are_readable_only_by_their_key(market: Marketplace) -> None:
    await two_sellers(market)
    mine, theirs = await market.add_key("frank"), await market.add_key("grace")
    raw = await market.client(mine).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=8
    )
    clearing_id = raw.headers["x-auction-clearing-id"]
    async with httpx.AsyncClient(base_url=market.url) as http:
        own = await http.get(
            f"/v1/clearings/{clearing_id}", headers={"authorization": f"Bearer {mine}"}
        )
        other = await http.get(
            f"/v1/clearings/{clearing_id}", headers={"authorization": f"Bearer {theirs}"}
        )
        unknown = await http.get(
            "/v1/clearings/clr_nope", headers={"authorization": f"Bearer {mine}"}
        )
    assert own.status_code == 200
    record = own.json()
    assert record["id"] == clearing_id and record["outcome"] == "completed"
    assert record["winner"]["offer_id"] == "c1"
    assert [c["offer_id"] for c in record["candidates"]] == ["c1", "a1"]
    assert [a["outcome"] for a in record["attempts"]] == ["ok"]
    assert record["price_rule"] == "pay_as_ask"
    assert record["constraints"]["max_tokens"] == 8
    assert usd(record["cost_usd"]) > 0 and record["output_tokens"] > 0
    for reply in (other, unknown):
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("rule", ["second_price"])
async def test_second_price_charges_the_next_providers_ask(start_market: object, rule: str) -> None:
    market: Marketplace = await start_market(price_rule=rule)  # type: ignore[operator]
    await two_sellers(market)
    client = market.client(await market.add_key("heidi"))
    completion = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
    auction = completion.model_extra["auction"]  # type: ignore[index]
    assert auction["price_rule"] == "second_price" and auction["provider"] == "cheapco"
    usage = completion.usage
    assert usage is not None
    own = usage.prompt_tokens * Decimal("0.40") + usage.completion_tokens * Decimal("0.90")
    assert own / 1_000_000 < usd(auction["cost_usd"])
    assert Decimal(auction["input_usd_per_mtok"]) > Decimal("0.40")
