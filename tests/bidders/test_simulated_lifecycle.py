"""Simulated providers starting and stopping: restarts on the same port, HTTP edge cases,
keep-alive, a provider in a thread, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

import httpx
import pytest

from bidders.simulated.cli import add_arguments, config_from_args, run_from_args
from bidders.simulated.server import SimulatedProvider, provider_in_thread
from tests.bidders.simulated_fault_kit import call, config, request_for, wait_for
from tests.bidders.simulated_kit import KEY


async def test_stopped_provider_refuses_then_restarts_on_the_same_port(
    sim_client: httpx.AsyncClient,
) -> None:
    provider = SimulatedProvider("openai", config())
    async with provider:
        port = provider.port
        assert (await call(sim_client, "openai", provider)).status_code == 200
    assert not provider.running
    with pytest.raises(httpx.ConnectError):
        await call(sim_client, "openai", provider)
    async with provider:
        assert provider.port == port
        assert (await call(sim_client, "openai", provider)).status_code == 200
        assert provider.stats.requests == 2


async def test_stop_ends_requests_in_progress(sim_client: httpx.AsyncClient) -> None:
    provider = SimulatedProvider("openai", config(max_hang_s=30))
    await provider.start()
    pending = asyncio.ensure_future(call(sim_client, "openai", provider, fault="timeout"))
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
