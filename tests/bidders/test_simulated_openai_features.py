"""Simulated OpenAI provider: tool calls, tool_choice, JSON modes, images and cached prefixes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from tests.bidders.simulated_kit import (
    PROMPT,
    PROMPT_TOKENS,
    WEATHER_TOOL_SCHEMA,
    config,
    openai_chat,
    sse_json,
)


def weather_tool() -> dict[str, Any]:
    function = {"name": "get_weather", "description": "Weather", "parameters": WEATHER_TOOL_SCHEMA}
    return {"type": "function", "function": function}


async def test_openai_tool_call_when_asked_and_streamed_the_same(
    sim_client: httpx.AsyncClient,
) -> None:
    messages = [{"role": "user", "content": "Please call a tool for Paris"}]
    async with SimulatedProvider("openai", config()) as provider:
        plain = await openai_chat(sim_client, provider, messages=messages, tools=[weather_tool()])
        streamed = await openai_chat(
            sim_client, provider, messages=messages, tools=[weather_tool()], stream=True
        )
        not_asked = await openai_chat(sim_client, provider, tools=[weather_tool()])
    choice = plain.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments["city"], str) and arguments["days"] == 1
    deltas = [c["choices"][0]["delta"] for c in sse_json(streamed.text)]
    opening = deltas[0]["tool_calls"][0]
    assert (opening["id"], opening["function"]["name"]) == (call["id"], "get_weather")
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d]
    assert "".join(fragments) == call["function"]["arguments"]
    assert sse_json(streamed.text)[-1]["choices"][0]["finish_reason"] == "tool_calls"
    usage = plain.json()["usage"]
    assert usage["completion_tokens"] == 1 + -(-len(call["function"]["arguments"]) // 4)
    assert not_asked.json()["choices"][0]["message"]["content"] == PROMPT


@pytest.mark.parametrize(
    ("tool_choice", "called"),
    [
        ("required", True),
        ({"type": "function", "function": {"name": "get_weather"}}, True),
        ("none", False),
        ("auto", False),
    ],
)
async def test_openai_tool_choice(
    sim_client: httpx.AsyncClient, tool_choice: object, called: bool
) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(
            sim_client, provider, tools=[weather_tool()], tool_choice=tool_choice
        )
    message = resp.json()["choices"][0]["message"]
    assert ("tool_calls" in message) is called


async def test_openai_json_modes_return_valid_json(sim_client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
        },
    }
    json_schema = {"name": "out", "schema": schema}
    async with SimulatedProvider("openai", SimConfig(reply_tokens=64)) as provider:
        loose = await openai_chat(sim_client, provider, response_format={"type": "json_object"})
        strict = await openai_chat(
            sim_client,
            provider,
            response_format={"type": "json_schema", "json_schema": json_schema},
        )
        short = await openai_chat(
            sim_client, provider, response_format={"type": "json_object"}, max_tokens=8
        )
    assert set(json.loads(loose.json()["choices"][0]["message"]["content"])) == {"reply"}
    value = json.loads(strict.json()["choices"][0]["message"]["content"])
    assert set(value) == {"answer", "score", "tags", "kind"}
    assert isinstance(value["answer"], str) and value["score"] == 1.5 and value["kind"] == "a"
    assert json.loads(short.json()["choices"][0]["message"]["content"])["reply"]
    assert short.json()["usage"]["completion_tokens"] <= 8


async def test_openai_images_are_accepted_and_counted(sim_client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": PROMPT}, image]
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(
            sim_client, provider, messages=[{"role": "user", "content": content}]
        )
    assert resp.status_code == 200
    assert resp.json()["usage"]["prompt_tokens"] == PROMPT_TOKENS + 85
    assert resp.json()["choices"][0]["message"]["content"] == PROMPT


async def test_openai_repeated_prefix_is_reported_as_cached(sim_client: httpx.AsyncClient) -> None:
    system = {"role": "system", "content": "You are terse. " * 40}  # 600 chars: 150 tokens
    first = [system, {"role": "user", "content": "first question"}]
    second = [system, {"role": "user", "content": "another question"}]
    async with SimulatedProvider("openai", config(cache_min_tokens=100)) as provider:
        cold = (await openai_chat(sim_client, provider, messages=first)).json()["usage"]
        warm = (await openai_chat(sim_client, provider, messages=second)).json()["usage"]
    prefix_tokens = 3 + 4 + 150  # priming + the system message
    assert cold["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm["prompt_tokens_details"]["cached_tokens"] == prefix_tokens
    assert warm["prompt_tokens"] == prefix_tokens + 4 + 4  # "another question": 16 chars
