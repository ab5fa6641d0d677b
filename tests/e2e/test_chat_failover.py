"""Failover: every kind of provider failure before the first byte moves on, charging once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from openai import APIStatusError
from openai.types.chat import ChatCompletionMessageParam

from auction.ledger import Ledger
from bidders.simulated.behaviour import FaultKind, SimConfig
from tests.e2e.conftest import Marketplace, free_port

MODEL = "llama-3.1-70b-instruct"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
SIM = SimConfig(max_hang_s=5, slow_first_byte_ms=3_000)


async def flaky_and_steady(market: Marketplace, fault: FaultKind | None) -> None:
    """`flaky` (cheapest) fails once with `fault`; `steady` answers. `fault` None: refused."""
    if fault is None:
        await market.add_provider("flaky", f"http://127.0.0.1:{free_port()}/v1")
    else:
        sim = await market.add_sim("flaky", SIM)
        sim.faults.add(fault)
    await market.add_sim("steady", SIM)
    await market.post(
        market.offer("flaky", "f1", prices=("0.10", "0.20")),
        market.offer("steady", "s1", prices=("0.50", "1.00")),
    )


async def assert_settled_once(market: Marketplace, key: str, clearing_id: str) -> None:
    """One ledger entry, the account charged exactly that, no holds, no capacity in use."""
    ledger = Ledger(market.market.redis, market.market.keys)
    entries = [e async for _, e in ledger.read()]
    assert [e.clearing_id for e in entries] == [clearing_id]
    account = await market.account(key)
    assert Decimal(str(account["held_usd"])) == 0
    assert Decimal(str(account["spent_usd"])) == Decimal(entries[0].cost) / 10**9
    for offer in (market.offer("flaky", "f1"), market.offer("steady", "s1")):
        assert await market.in_flight(offer) == 0


CASES: list[tuple[FaultKind | None, str]] = [
    (None, "unavailable"),  # connection refused
    ("rate_limit", "rate_limited"),
    ("server_error", "unavailable"),
    ("overloaded", "unavailable"),
    ("disconnect", "unavailable"),
    ("malformed_json", "bad_response"),
    ("timeout", "timeout"),
    ("slow_first_byte", "timeout"),
]


@pytest.mark.parametrize(("fault", "outcome"), CASES)
@pytest.mark.parametrize("stream", [False, True])
async def test_failover_on_each_fault(
    market: Marketplace, fault: FaultKind | None, outcome: str, stream: bool
) -> None:
    await flaky_and_steady(market, fault)
    key = await market.add_key("alice")
    client = market.client(key)
    extra = {"auction": {"timeout_ms": 1_500}}
    if stream:
        streamed = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, max_tokens=10, stream=True, extra_body=extra
        )
        chunks = [c async for c in streamed.parse()]
        auction = (chunks[-1].model_extra or {})["auction"]
        headers = streamed.headers
    else:
        whole = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, max_tokens=10, extra_body=extra
        )
        auction = (whole.parse().model_extra or {})["auction"]
        headers = whole.headers
    assert headers["x-auction-provider"] == "steady"
    assert auction["provider"] == "steady" and auction["attempts"] == 2
    clearing_id = headers["x-auction-clearing-id"]
    record = await record_of(market, key, clearing_id)
    assert [a["outcome"] for a in record["attempts"]] == [outcome, "ok"]
    assert [a["provider"] for a in record["attempts"]] == ["flaky", "steady"]
    await assert_settled_once(market, key, clearing_id)
    health = market.market.broker.parts.health.state("flaky/f1")
    assert health is not None and health.fails == 1


async def record_of(market: Marketplace, key: str, clearing_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=market.url) as http:
        reply = await http.get(
            f"/v1/clearings/{clearing_id}", headers={"authorization": f"Bearer {key}"}
        )
    assert reply.status_code == 200
    record: dict[str, Any] = reply.json()
    return record


async def test_a_misconfigured_provider_is_failed_over(market: Marketplace) -> None:
    await market.add_sim("locked", SimConfig(api_key="the-right-key"))  # registered without it
    await market.add_sim("open")
    await market.post(
        market.offer("locked", "l1", prices=("0.10", "0.20")),
        market.offer("open", "o1", prices=("0.50", "1.00")),
    )
    client = market.client(await market.add_key("bob"))
    completion = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
    assert completion.model_extra["auction"]["provider"] == "open"  # type: ignore[index]


async def test_every_offer_failing_is_a_502_that_charges_nothing(market: Marketplace) -> None:
    for name in ("one", "two"):
        sim = await market.add_sim(name, SIM)
        sim.faults.add("server_error", 5)
    await market.post(
        market.offer("one", "x", prices=("0.10", "0.20")),
        market.offer("two", "y", prices=("0.50", "1.00")),
    )
    key = await market.add_key("carol")
    with pytest.raises(APIStatusError) as caught:
        await market.client(key).chat.completions.create(model=MODEL, messages=HELLO)
    error = caught.value
    assert error.status_code == 502
    assert error.body["code"] == "upstream_failed"  # type: ignore[index]
    clearing_id = error.response.headers["x-auction-clearing-id"]
    record = await record_of(market, key, clearing_id)
    assert [a["outcome"] for a in record["attempts"]] == ["unavailable", "unavailable"]
    assert record["outcome"] == "failed"
    account = await market.account(key)
    assert (account["spent_usd"], account["held_usd"]) == ("0.000000", "0.000000")
    for offer in (market.offer("one", "x"), market.offer("two", "y")):
        assert await market.in_flight(offer) == 0
    assert [e async for e in Ledger(market.market.redis, market.market.keys).read()] == []


async def test_a_provider_that_keeps_failing_cools_down(start_market: object) -> None:
    market: Marketplace = await start_market(failures_to_cool_down=2, probe_share=0.0)  # type: ignore[operator]
    bad = await market.add_sim("bad")
    bad.faults.add("server_error", 100)
    await market.add_sim("good")
    await market.post(
        market.offer("bad", "b", prices=("0.10", "0.20")),
        market.offer("good", "g", prices=("0.50", "1.00")),
    )
    client = market.client(await market.add_key("dave"))
    attempts = []
    for _ in range(4):
        completion = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
        attempts.append(completion.model_extra["auction"]["attempts"])  # type: ignore[index]
    # Two failures in a row start the cool-down: later requests skip the bad offer entirely.
    assert attempts == [2, 2, 1, 1]
    assert bad.stats.requests == 2


async def test_a_body_dropped_midway_before_the_first_byte_fails_over(market: Marketplace) -> None:
    """The provider sends half its (non-streamed) answer and cuts the connection: the client has
    had no byte yet, so the next offer answers and only it is charged. A stream dropped after
    the first byte reached the client ends in an error event instead, charged for what was used:
    `test_chat_stream.py::test_a_failure_after_the_first_byte_ends_with_an_error_event`."""
    await flaky_and_steady(market, "drop_stream")
    key = await market.add_key("erin")
    whole = await market.client(key).chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=10
    )
    auction = (whole.parse().model_extra or {})["auction"]
    assert whole.headers["x-auction-provider"] == "steady" and auction["attempts"] == 2
    clearing_id = whole.headers["x-auction-clearing-id"]
    record = await record_of(market, key, clearing_id)
    assert [a["provider"] for a in record["attempts"]] == ["flaky", "steady"]
    assert [a["outcome"] for a in record["attempts"]] == ["unavailable", "ok"]
    await assert_settled_once(market, key, clearing_id)
