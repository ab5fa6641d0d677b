"""Helpers for the simulated providers' fault and lifecycle tests: a valid request in each wire
format (a fault asked for by header), SSE data lines, and bounded polling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from clearing.types import ApiName
from tests.bidders.simulated_kit import KEY

APIS: tuple[ApiName, ...] = ("openai", "anthropic", "gemini")


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
