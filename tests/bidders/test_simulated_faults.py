"""Simulated providers misbehaving on demand, counting what they serve, starting and stopping."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bidders.simulated.behaviour import FaultPlan, SimConfig, parse_fault
from bidders.simulated.cli import add_arguments, config_from_args, run_from_args
from bidders.simulated.server import SimulatedProvider, provider_in_thread
from clearing.types import ApiName

KEY = "sk-sim-test-key"
APIS: tuple[ApiName, ...] = ("openai", "anthropic", "gemini")
STATUS = {  # the vendor's status for rate_limit, server_error, overloaded
    "openai": (429, 500, 503),
    "anthropic": (429, 500, 529),
    "gemini": (429, 500, 503),
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Plain HTTP on 127.0.0.1: no TLS, so skip loading a CA bundle for every test.
    async with httpx.AsyncClient(timeout=10, verify=False) as http:
        yield http


def request_for(
    api: ApiName, provider: SimulatedProvider, *, stream: bool = False
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(url, body, headers) of a valid chat request in the provider's own wire format."""
    text = "one two three four five six"
    if api == "openai":
        body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}
        url = f"{provider.base_url}/chat/completions"
        return url, body, {"authorization": f"Bearer {KEY}"}
    if api == "anthropic":
        messages = [{"role": "user", "content": text}]
        body = {"model": "m", "max_tokens": 50, "messages": messages, "stream": stream}
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        return f"{provider.base_url}/v1/messages", body, headers
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    url = f"{provider.base_url}/v1beta/models/m:{action}"
    return url, {"contents": [{"parts": [{"text": text}]}]}, {"x-goog-api-key": KEY}


async def call(
    client: httpx.AsyncClient,
    api: ApiName,
    provider: SimulatedProvider,
    *,
    stream: bool = False,
    fault: str | None = None,
    timeout: float = 10,
) -> httpx.Response:
    url, body, headers = request_for(api, provider, stream=stream)
    if fault is not None:
        headers = {**headers, "x-sim-fault": fault}
    return await client.post(url, json=body, headers=headers, timeout=timeout)


def data_lines(body: str) -> list[str]:
    lines = body.replace("\r\n", "\n").split("\n")
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def config(**changes: Any) -> SimConfig:
    return SimConfig(**{"api_key": KEY, "reply_tokens": 8, **changes})


async def wait_for(condition: Any, seconds: float = 5.0) -> None:
    """Poll `condition()` until true; bounded so a broken server fails the test, not hangs it."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("api", APIS)
async def test_error_faults_use_the_vendor_status_and_shape(
    client: httpx.AsyncClient, api: ApiName
) -> None:
    async with SimulatedProvider(api, config(retry_after_s=7)) as provider:
        answers = [await call(client, api, provider, fault=f) for f in ("429", "500", "overloaded")]
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


async def test_planned_faults_come_first_in_order_then_stop(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        control = f"{provider.url}/_sim/faults"
        await client.post(control, json={"kind": "429", "count": 2})
        planned = await client.post(control, json={"kind": "server_error"})
        statuses = [(await call(client, "openai", provider)).status_code for _ in range(4)]
        stats = (await client.get(f"{provider.url}/_sim/stats")).json()
    assert planned.json()["planned"] == [
        {"kind": "rate_limit", "count": 2},
        {"kind": "server_error", "count": 1},
    ]
    assert statuses == [429, 429, 500, 200]
    assert stats["faults_injected"] == 3 and stats["requests"] == 4


async def test_random_faults_are_seeded_and_repeatable(client: httpx.AsyncClient) -> None:
    runs = []
    for _ in range(2):
        async with SimulatedProvider("openai", config()) as provider:
            order = {"rate": 0.5, "kinds": ["429", "500"], "seed": 11}
            assert (await client.post(f"{provider.url}/_sim/faults", json=order)).status_code == 200
            statuses = [(await call(client, "openai", provider)).status_code for _ in range(12)]
            runs.append((statuses, provider.stats.faults_injected))
    (first, injected), (second, _) = runs
    assert first == second
    assert {429, 500, 200} == set(first)
    assert injected == sum(1 for s in first if s != 200)


async def test_control_routes_validate_clear_and_reset(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        control = f"{provider.url}/_sim/faults"
        bad_kind = await client.post(control, json={"kind": "gremlins"})
        bad_rate = await client.post(control, json={"rate": 2})
        await client.post(control, json={"kind": "timeout", "count": 3})
        cleared = await client.delete(control)
        unknown_header = await call(client, "openai", provider, fault="gremlins")
        await call(client, "openai", provider)
        reset = await client.post(f"{provider.url}/_sim/reset")
        missing = await client.get(f"{provider.url}/_sim/nothing")
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


async def test_timeout_holds_until_the_client_gives_up(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(max_hang_s=20)) as provider:
        with pytest.raises(httpx.ReadTimeout):
            await call(client, "openai", provider, fault="timeout", timeout=0.3)
        await wait_for(lambda: provider.stats.in_flight == 0)  # freed once the client left
        assert provider.stats.max_in_flight == 1


async def test_timeout_is_bounded_by_max_hang(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(max_hang_s=0.2)) as provider:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):
            await call(client, "anthropic", provider, fault="timeout", timeout=10)
        assert 0.2 <= time.monotonic() - started < 5


@pytest.mark.parametrize("api", APIS)
async def test_disconnect_and_dropped_answers(client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        with pytest.raises(httpx.RemoteProtocolError):
            await call(client, api, provider, fault="disconnect")
        with pytest.raises(httpx.RemoteProtocolError):
            await call(client, api, provider, fault="drop_stream")
        url, body, headers = request_for(api, provider, stream=True)
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            headers = {**headers, "x-sim-fault": "drop_stream"}
            async with client.stream("POST", url, json=body, headers=headers) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    received.append(line)
        stats = provider.stats.as_dict()
    text = "\n".join(received)
    assert "data: " in text  # part of the stream arrived ...
    assert "[DONE]" not in text and "message_stop" not in text and "finishReason" not in text
    assert stats["tokens_out"] == 0 and stats["faults_injected"] == 3


@pytest.mark.parametrize("api", APIS)
async def test_stream_error_event(client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        resp = await call(client, api, provider, stream=True, fault="stream_error")
        unary = await call(client, api, provider, fault="stream_error")
    assert resp.status_code == 200
    last = json.loads(data_lines(resp.text)[-1])
    if api == "anthropic":
        assert "event: error\n" in resp.text
        assert last == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
    else:
        assert set(last) == {"error"}
    assert unary.status_code == 500


@pytest.mark.parametrize("api", APIS)
async def test_malformed_json(client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        unary = await call(client, api, provider, fault="malformed_json")
        stream = await call(client, api, provider, stream=True, fault="malformed_json")
    assert unary.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(unary.text)
    broken = 0
    for line in data_lines(stream.text):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            broken += line != "[DONE]"
    assert broken == 1


@pytest.mark.parametrize("api", APIS)
async def test_empty_content(client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        body = (await call(client, api, provider, fault="empty_content")).json()
        stream = await call(client, api, provider, stream=True, fault="empty_content")
    if api == "openai":
        assert body["choices"][0]["message"]["content"] == ""
        assert body["usage"]["completion_tokens"] == 0
        assert '"content":"' not in stream.text.replace('"content":""', "")
    elif api == "anthropic":
        assert body["content"] == [] and body["usage"]["output_tokens"] == 0
        assert "content_block_delta" not in stream.text
    else:
        assert body["candidates"][0]["content"] == {"role": "model"}
        assert "candidatesTokenCount" not in body["usageMetadata"]
        assert len(data_lines(stream.text)) == 1


async def test_slow_first_byte_then_a_normal_answer(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config(slow_first_byte_ms=300)) as provider:
        started = time.monotonic()
        resp = await call(client, "gemini", provider, fault="slow_first_byte")
        assert time.monotonic() - started >= 0.3
    assert resp.status_code == 200 and resp.json()["candidates"][0]["finishReason"] == "STOP"


async def test_ttft_and_pacing_delay_the_stream(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(ttft_ms=150, output_tokens_per_s=50)) as provider:
        url, body, headers = request_for("openai", provider, stream=True)
        started = time.monotonic()
        arrivals = []
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            headers_at = time.monotonic() - started
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
    assert headers_at < arrivals[0]  # headers first, tokens after the time to first token
    assert arrivals[0] >= 0.15
    assert arrivals[-1] >= 0.15 + 7 / 50  # 8 tokens at 50/s: 7 gaps of 20 ms after the first
    assert len(arrivals) == 8 + 3  # role chunk, 8 tokens, finish chunk, [DONE]


async def test_stats_count_concurrency_and_capacity(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(ttft_ms=300, capacity=3)) as provider:
        calls = [asyncio.ensure_future(call(client, "anthropic", provider)) for _ in range(5)]
        await wait_for(lambda: provider.stats.in_flight == 5)
        during = (await client.get(f"{provider.url}/_sim/stats")).json()
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


async def test_stopped_provider_refuses_then_restarts_on_the_same_port(
    client: httpx.AsyncClient,
) -> None:
    provider = SimulatedProvider("openai", config())
    async with provider:
        port = provider.port
        assert (await call(client, "openai", provider)).status_code == 200
    assert not provider.running
    with pytest.raises(httpx.ConnectError):
        await call(client, "openai", provider)
    async with provider:
        assert provider.port == port
        assert (await call(client, "openai", provider)).status_code == 200
        assert provider.stats.requests == 2


async def test_stop_ends_requests_in_progress(client: httpx.AsyncClient) -> None:
    provider = SimulatedProvider("openai", config(max_hang_s=30))
    await provider.start()
    pending = asyncio.ensure_future(call(client, "openai", provider, fault="timeout"))
    await wait_for(lambda: provider.stats.in_flight == 1)
    await provider.stop()
    with pytest.raises(httpx.RemoteProtocolError):
        await pending
    assert provider.stats.in_flight == 0


async def test_http_edge_cases_bad_request_and_body_limit() -> None:
    async with SimulatedProvider("openai", config(max_body_bytes=1024)) as provider:
        reader, writer = await asyncio.open_connection("127.0.0.1", provider.port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        garbage = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        big = b"x" * 2000
        request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2000\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", provider.port)
        writer.write(request + big)
        too_large = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert too_large.startswith(b"HTTP/1.1 413 ")


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    limits = httpx.Limits(max_connections=1)
    async with SimulatedProvider("gemini", config()) as provider:
        async with httpx.AsyncClient(limits=limits, timeout=5, verify=False) as one:
            statuses = [(await call(one, "gemini", provider)).status_code for _ in range(20)]
            streams = [await call(one, "gemini", provider, stream=True) for _ in range(5)]
    assert statuses == [200] * 20
    assert all(s.status_code == 200 and "finishReason" in s.text for s in streams)


def test_provider_in_a_thread_for_synchronous_callers() -> None:
    with provider_in_thread("openai", config()) as provider:
        url, body, headers = request_for("openai", provider)
        resp = httpx.post(url, json=body, headers=headers, timeout=5)
        assert provider.stats.requests == 1
    assert resp.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, json=body, headers=headers, timeout=5)


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


def test_cli_flags_build_the_config_and_reject_nonsense() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    latency = ["--ttft-ms", "250", "--tokens-per-s", "80", "--models", "a", "b"]
    faults = ["--fault-rate", "0.1", "--fault-kinds", "429", "timeout", "--api-key", "k"]
    args = parser.parse_args(["--api", "anthropic", *latency, *faults])
    built = config_from_args(args)
    assert (built.ttft_ms, built.output_tokens_per_s, built.models) == (250, 80.0, ("a", "b"))
    assert (built.fault_rate, built.fault_kinds, built.api_key) == (
        0.1,
        ("rate_limit", "timeout"),
        "k",
    )
    assert run_from_args(parser.parse_args(["--api", "openai", "--reply-tokens", "0"])) == 2


def test_cli_process_serves_and_stops_on_ctrl_c() -> None:
    command = [sys.executable, "-m", "bidders.simulated", "--api", "gemini", "--api-key", KEY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        base_url = banner.split("base URL ")[1].split()[0]
        url = f"{base_url}/v1beta/models/gemini-1.5-pro:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        resp = httpx.post(url, json=body, headers={"x-goog-api-key": KEY}, timeout=5)
        assert resp.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
