"""Helpers for the simulated providers' wire tests: the test key and prompt, SSE parsing, and
the OpenAI request and reply shapes that several test modules share."""

from __future__ import annotations

import json
from typing import Any

import httpx

from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider

KEY = "sk-sim-test-key"
PROMPT = "one two three four five"
PROMPT_TOKENS = 13  # ceil(23 / 4) + 4 per message + 3 priming
WEATHER_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}


def sse_events(body: str) -> list[tuple[str | None, str]]:
    """(event name, data) for each server-sent event, whichever line endings the server used."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


def sse_json(body: str) -> list[Any]:
    return [json.loads(data) for _, data in sse_events(body) if data != "[DONE]"]


def config(**changes: Any) -> SimConfig:
    return SimConfig(**{"api_key": KEY, "reply_tokens": 5, **changes})


# OpenAI -------------------------------------------------------------------------------------------

OPENAI_USAGE_DETAILS = {
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }
}


def openai_head(kind: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sim00000001",
        "object": kind,
        "model": "gpt-4o",
        "service_tier": "default",
        "system_fingerprint": "fp_simulated",
    }


def openai_usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        **OPENAI_USAGE_DETAILS,
    }


async def openai_chat(
    client: httpx.AsyncClient, provider: SimulatedProvider, **body: Any
) -> httpx.Response:
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], **body}
    headers = {"authorization": f"Bearer {KEY}"}
    return await client.post(f"{provider.base_url}/chat/completions", json=payload, headers=headers)
