"""Simulated providers answering with errors on demand: the vendor's status and shape, planned
and seeded random faults, the control routes, and fault parsing."""

from __future__ import annotations

import httpx
import pytest

from bidders.simulated.behaviour import FaultPlan, SimConfig, parse_fault
from bidders.simulated.server import SimulatedProvider
from clearing.types import ApiName
from tests.bidders.simulated_fault_kit import APIS, call, config

STATUS = {  # the vendor's status for rate_limit, server_error, overloaded
    "openai": (429, 500, 503),
    "anthropic": (429, 500, 529),
    "gemini": (429, 500, 503),
}


@pytest.mark.parametrize("api", APIS)
async def test_error_faults_use_the_vendor_status_and_shape(
    sim_client: httpx.AsyncClient, api: ApiName
) -> None:
    async with SimulatedProvider(api, config(retry_after_s=7)) as provider:
        answers = [
            await call(sim_client, api, provider, fault=f) for f in ("429", "500", "overloaded")
        ]
        stats = provider.stats.as_dict()
    assert tuple(r.status_code for r in answers) == STATUS[api]
    assert answers[0].headers["retry-after"] == "7"
    for resp in answers:
        body = resp.json()
        if api == "anthropic":
            assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        elif api == "openai":
            assert set(body["error"]) == {"message", "type", "param", "code"}
        else:
            assert body["error"]["code"] == resp.status_code
    if api == "gemini":
        retry = answers[0].json()["error"]["details"][0]
        assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    assert stats["faults_injected"] == 3 and stats["tokens_out"] == 0


async def test_planned_faults_come_first_in_order_then_stop(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        control = f"{provider.url}/_sim/faults"
        await sim_client.post(control, json={"kind": "429", "count": 2})
        planned = await sim_client.post(control, json={"kind": "server_error"})
        statuses = [(await call(sim_client, "openai", provider)).status_code for _ in range(4)]
        stats = (await sim_client.get(f"{provider.url}/_sim/stats")).json()
    assert planned.json()["planned"] == [
        {"kind": "rate_limit", "count": 2},
        {"kind": "server_error", "count": 1},
    ]
    assert statuses == [429, 429, 500, 200]
    assert stats["faults_injected"] == 3 and stats["requests"] == 4


async def test_random_faults_are_seeded_and_repeatable(sim_client: httpx.AsyncClient) -> None:
    runs = []
    for _ in range(2):
        async with SimulatedProvider("openai", config()) as provider:
            order = {"rate": 0.5, "kinds": ["429", "500"], "seed": 11}
            assert (
                await sim_client.post(f"{provider.url}/_sim/faults", json=order)
            ).status_code == 200
            statuses = [(await call(sim_client, "openai", provider)).status_code for _ in range(12)]
            runs.append((statuses, provider.stats.faults_injected))
    (first, injected), (second, _) = runs
    assert first == second
    assert {429, 500, 200} == set(first)
    assert injected == sum(1 for s in first if s != 200)


async def test_control_routes_validate_clear_and_reset(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        control = f"{provider.url}/_sim/faults"
        bad_kind = await sim_client.post(control, json={"kind": "gremlins"})
        bad_rate = await sim_client.post(control, json={"rate": 2})
        await sim_client.post(control, json={"kind": "timeout", "count": 3})
        cleared = await sim_client.delete(control)
        unknown_header = await call(sim_client, "openai", provider, fault="gremlins")
        await call(sim_client, "openai", provider)
        reset = await sim_client.post(f"{provider.url}/_sim/reset")
        missing = await sim_client.get(f"{provider.url}/_sim/nothing")
    assert bad_kind.status_code == 400 and "gremlins" in bad_kind.json()["error"]
    assert bad_rate.status_code == 400
    assert cleared.json()["planned"] == [] and cleared.json()["rate"] == 0
    assert unknown_header.status_code == 400
    assert "x-sim-fault" in unknown_header.json()["error"]["message"]
    assert reset.json() == dict.fromkeys(
        [
            "requests",
            "in_flight",
            "max_in_flight",
            "over_capacity_events",
            "faults_injected",
            "tokens_in",
            "tokens_out",
        ],
        0,
    )
    assert missing.status_code == 404


def test_fault_names_and_plan_units() -> None:
    assert parse_fault(" 429 ") == "rate_limit" and parse_fault("529") == "overloaded"
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("teapot")
    plan = FaultPlan()
    plan.add("timeout", 2)
    assert [plan.next(), plan.next("disconnect"), plan.next(), plan.next()] == [
        "timeout",
        "disconnect",  # asked for in the request: the plan waits
        "timeout",
        None,
    ]
    with pytest.raises(ValueError):
        plan.add("timeout", 0)
    with pytest.raises(ValueError, match="fault_rate"):
        SimConfig(fault_rate=1.5)
