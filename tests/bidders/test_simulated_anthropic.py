"""Simulated Anthropic provider on a real socket: the documented message and event stream,
headers, errors, tool use, JSON prefill, images and cache control."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from tests.bidders.simulated_kit import (
    KEY,
    PROMPT,
    PROMPT_TOKENS,
    WEATHER_TOOL_SCHEMA,
    config,
    sse_events,
)

VERSION = "2023-06-01"
AUTH_ERROR = "authentication_error"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": VERSION}


async def anthropic_messages(
    client: httpx.AsyncClient,
    provider: SimulatedProvider,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    payload = {
        "model": "claude-3-5-haiku",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": PROMPT}],
        **body,
    }
    sent = ANTHROPIC_HEADERS if headers is None else headers
    return await client.post(f"{provider.base_url}/v1/messages", json=payload, headers=sent)


def anthropic_usage(output: int, read: int = 0, written: int = 0) -> dict[str, int]:
    return {
        "input_tokens": PROMPT_TOKENS - read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output,
    }


async def test_anthropic_message_is_the_documented_object(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config()) as provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}"
        resp = await anthropic_messages(sim_client, provider)
    assert resp.status_code == 200 and resp.headers["request-id"] == "req_sim00000001"
    assert resp.json() == {
        "id": "msg_sim00000001",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku",
        "content": [{"type": "text", "text": PROMPT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(5),
    }


async def test_anthropic_stream_event_sequence(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(tokens_per_chunk=2)) as provider:
        resp = await anthropic_messages(sim_client, provider, stream=True, max_tokens=4)
    events = [(name, json.loads(data)) for name, data in sse_events(resp.text)]
    assert all(name == data["type"] for name, data in events)
    message: dict[str, Any] = {
        "id": "msg_sim00000001",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": anthropic_usage(1),
    }

    def delta(text: str) -> dict[str, Any]:
        body = {"type": "text_delta", "text": text}
        return {"type": "content_block_delta", "index": 0, "delta": body}

    assert [data for _, data in events] == [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        delta("one two"),
        delta(" three four"),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]


@pytest.mark.parametrize(
    ("headers", "status", "kind", "message"),
    [
        ({"anthropic-version": VERSION}, 401, AUTH_ERROR, "x-api-key header is required"),
        ({"x-api-key": "nope", "anthropic-version": VERSION}, 401, AUTH_ERROR, "invalid x-api-key"),
        ({"x-api-key": KEY}, 400, "invalid_request_error", "anthropic-version: header is required"),
    ],
)
async def test_anthropic_header_failures(
    sim_client: httpx.AsyncClient, headers: dict[str, str], status: int, kind: str, message: str
) -> None:
    async with SimulatedProvider("anthropic", config()) as provider:
        resp = await anthropic_messages(sim_client, provider, headers=headers)
    assert resp.status_code == status
    assert resp.json() == {"type": "error", "error": {"type": kind, "message": message}}


async def test_anthropic_unknown_model_and_missing_max_tokens(
    sim_client: httpx.AsyncClient,
) -> None:
    async with SimulatedProvider("anthropic", config(models=("claude-3-5-haiku",))) as provider:
        unknown = await anthropic_messages(sim_client, provider, model="claude-9")
        url = f"{provider.base_url}/v1/messages"
        body = {"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "hi"}]}
        no_limit = await sim_client.post(url, json=body, headers=ANTHROPIC_HEADERS)
    assert unknown.status_code == 404
    error = {"type": "not_found_error", "message": "model: claude-9"}
    assert unknown.json() == {"type": "error", "error": error}
    assert no_limit.status_code == 400
    assert no_limit.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


async def test_anthropic_tool_use_plain_and_streamed(sim_client: httpx.AsyncClient) -> None:
    tool = {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_TOOL_SCHEMA}
    forced: dict[str, Any] = {
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    async with SimulatedProvider("anthropic", config()) as provider:
        plain = (await anthropic_messages(sim_client, provider, **forced)).json()
        streamed = await anthropic_messages(sim_client, provider, stream=True, **forced)
        declined = await anthropic_messages(sim_client, provider, tools=[tool])
    (block,) = plain["content"]
    assert plain["stop_reason"] == "tool_use"
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "get_weather" and block["input"]["days"] == 1
    events = [json.loads(data) for _, data in sse_events(streamed.text)]
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"] == {**block, "input": {}}
    partial = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert json.loads("".join(partial)) == block["input"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert declined.json()["content"] == [{"type": "text", "text": PROMPT}]


async def test_anthropic_json_prefill_images_and_cache_control(
    sim_client: httpx.AsyncClient,
) -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
    }
    system = [{"type": "text", "text": "Be brief. " * 60, "cache_control": {"type": "ephemeral"}}]
    prefill = [
        {"role": "user", "content": [{"type": "text", "text": "Answer in JSON"}, image]},
        {"role": "assistant", "content": "{"},
    ]
    async with SimulatedProvider("anthropic", SimConfig(cache_min_tokens=100)) as provider:
        json_reply = (await anthropic_messages(sim_client, provider, messages=prefill)).json()
        first = (await anthropic_messages(sim_client, provider, system=system)).json()["usage"]
        second = (await anthropic_messages(sim_client, provider, system=system)).json()["usage"]
        unmarked = (await anthropic_messages(sim_client, provider, system="Be brief. " * 60)).json()
    assert json.loads("{" + json_reply["content"][0]["text"])["reply"].startswith("Answer in JSON")
    prefix = 3 + 4 + 150  # priming + the 600-character system prompt
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (prefix, 0)
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (0, prefix)
    assert second["input_tokens"] == PROMPT_TOKENS - 3  # the user message alone
    assert unmarked["usage"]["cache_read_input_tokens"] == 0  # nothing marked: nothing cached
