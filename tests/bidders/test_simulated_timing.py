"""Simulated providers' timing: hung requests, a slow first byte, time to first token and pacing,
and the concurrency and capacity counted while requests run."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bidders.simulated.server import SimulatedProvider
from tests.bidders.simulated_fault_kit import call, config, request_for, wait_for


async def test_timeout_holds_until_the_client_gives_up(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(max_hang_s=20)) as provider:
        with pytest.raises(httpx.ReadTimeout):
            await call(sim_client, "openai", provider, fault="timeout", timeout=0.3)
        await wait_for(lambda: provider.stats.in_flight == 0)  # freed once the client left
        assert provider.stats.max_in_flight == 1


async def test_timeout_is_bounded_by_max_hang(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(max_hang_s=0.2)) as provider:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):
            await call(sim_client, "anthropic", provider, fault="timeout", timeout=10)
        assert 0.2 <= time.monotonic() - started < 5


async def test_slow_first_byte_then_a_normal_answer(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config(slow_first_byte_ms=300)) as provider:
        started = time.monotonic()
        resp = await call(sim_client, "gemini", provider, fault="slow_first_byte")
        assert time.monotonic() - started >= 0.3
    assert resp.status_code == 200 and resp.json()["candidates"][0]["finishReason"] == "STOP"


async def test_ttft_and_pacing_delay_the_stream(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(ttft_ms=150, output_tokens_per_s=50)) as provider:
        url, body, headers = request_for("openai", provider, stream=True)
        started = time.monotonic()
        arrivals = []
        async with sim_client.stream("POST", url, json=body, headers=headers) as resp:
            headers_at = time.monotonic() - started
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
    assert headers_at < arrivals[0]  # headers first, tokens after the time to first token
    assert arrivals[0] >= 0.15
    assert arrivals[-1] >= 0.15 + 7 / 50  # 8 tokens at 50/s: 7 gaps of 20 ms after the first
    assert len(arrivals) == 8 + 3  # role chunk, 8 tokens, finish chunk, [DONE]


async def test_stats_count_concurrency_and_capacity(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(ttft_ms=300, capacity=3)) as provider:
        calls = [asyncio.ensure_future(call(sim_client, "anthropic", provider)) for _ in range(5)]
        await wait_for(lambda: provider.stats.in_flight == 5)
        during = (await sim_client.get(f"{provider.url}/_sim/stats")).json()
        answers = await asyncio.gather(*calls)
        after = provider.stats.as_dict()
    assert during["in_flight"] == 5 and during["requests"] == 5
    usage = [r.json()["usage"] for r in answers]
    assert after == {
        "requests": 5,
        "in_flight": 0,
        "max_in_flight": 5,
        "over_capacity_events": 2,  # the 4th and 5th arrived with 3 already running
        "faults_injected": 0,
        "tokens_in": sum(u["input_tokens"] for u in usage),
        "tokens_out": sum(u["output_tokens"] for u in usage),
    }
