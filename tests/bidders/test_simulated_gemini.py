"""Simulated Gemini provider on a real socket: the documented response and SSE chunks, keys by
header or query, errors, function calls, JSON mode and snake_case fields."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bidders.simulated.server import SimulatedProvider
from tests.bidders.simulated_kit import (
    KEY,
    PROMPT,
    PROMPT_TOKENS,
    WEATHER_TOOL_SCHEMA,
    config,
    sse_json,
)


async def gemini_generate(
    client: httpx.AsyncClient,
    provider: SimulatedProvider,
    *,
    stream: bool = False,
    model: str = "gemini-1.5-flash",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    action = "streamGenerateContent" if stream else "generateContent"
    url = f"{provider.base_url}/v1beta/models/{model}:{action}"
    query = {**({"alt": "sse"} if stream else {}), **(params or {})}
    payload = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], **body}
    sent = {"x-goog-api-key": KEY} if headers is None else headers
    return await client.post(url, params=query, json=payload, headers=sent)


def gemini_usage(output: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": PROMPT_TOKENS}
    if output:
        usage["candidatesTokenCount"] = output
    usage["totalTokenCount"] = PROMPT_TOKENS + output
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}]
    return usage


def gemini_response(candidate: dict[str, Any], output: int) -> dict[str, Any]:
    return {
        "candidates": [candidate],
        "usageMetadata": gemini_usage(output),
        "modelVersion": "gemini-1.5-flash",
        "responseId": "sim00000001",
    }


async def test_gemini_response_is_the_documented_object(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config()) as provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}"
        resp = await gemini_generate(sim_client, provider)
    content = {"parts": [{"text": PROMPT}], "role": "model"}
    candidate = {"content": content, "finishReason": "STOP", "index": 0}
    assert resp.status_code == 200
    assert resp.json() == gemini_response(candidate, 5)


async def test_gemini_sse_stream_chunks(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config(tokens_per_chunk=2)) as provider:
        resp = await gemini_generate(
            sim_client, provider, stream=True, generationConfig={"maxOutputTokens": 5}
        )
    assert resp.headers["content-type"] == "text/event-stream"
    assert "\r\n\r\n" in resp.text and "[DONE]" not in resp.text

    def chunk(text: str) -> dict[str, Any]:
        return {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}

    last = {"content": {"parts": [{"text": " five"}], "role": "model"}}
    assert sse_json(resp.text) == [
        gemini_response(chunk("one two"), 0),
        gemini_response(chunk(" three four"), 0),
        gemini_response({**last, "finishReason": "STOP", "index": 0}, 5),
    ]


@pytest.mark.parametrize(
    ("headers", "params", "status", "rpc_status"),
    [
        ({}, {}, 403, "PERMISSION_DENIED"),
        ({"x-goog-api-key": "wrong"}, {}, 400, "INVALID_ARGUMENT"),
        ({}, {"key": "wrong"}, 400, "INVALID_ARGUMENT"),
        ({}, {"key": KEY}, 200, None),
    ],
)
async def test_gemini_keys_by_header_or_query(
    sim_client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    rpc_status: str | None,
) -> None:
    async with SimulatedProvider("gemini", config()) as provider:
        resp = await gemini_generate(sim_client, provider, headers=headers, params=params)
    assert resp.status_code == status
    if rpc_status is not None:
        error = resp.json()["error"]
        assert (error["code"], error["status"]) == (status, rpc_status)
    if status == 400:
        assert resp.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


async def test_gemini_unknown_model_and_missing_contents(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config(models=("gemini-1.5-flash",))) as provider:
        unknown = await gemini_generate(sim_client, provider, model="gemini-9")
        empty = await gemini_generate(sim_client, provider, contents=[])
        no_sse = await sim_client.post(
            f"{provider.base_url}/v1beta/models/gemini-1.5-flash:streamGenerateContent",
            json={"contents": [{"parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": KEY},
        )
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND")
    assert error["message"].startswith("models/gemini-9 is not found for API version v1beta")
    assert empty.status_code == 400 and empty.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert no_sse.status_code == 404


async def test_gemini_function_call_json_mode_and_snake_case(sim_client: httpx.AsyncClient) -> None:
    declaration = {"name": "get_weather", "parameters": {**WEATHER_TOOL_SCHEMA, "type": "OBJECT"}}
    tools = [{"functionDeclarations": [declaration]}]
    any_mode = {"functionCallingConfig": {"mode": "ANY"}}
    async with SimulatedProvider("gemini", config(reply_tokens=40)) as provider:
        called = await gemini_generate(sim_client, provider, tools=tools, toolConfig=any_mode)
        streamed = await gemini_generate(
            sim_client, provider, stream=True, tools=tools, tool_config=any_mode
        )
        as_json = await gemini_generate(
            sim_client, provider, generation_config={"response_mime_type": "application/json"}
        )
    candidate = called.json()["candidates"][0]
    (part,) = candidate["content"]["parts"]
    assert part["functionCall"]["name"] == "get_weather"
    assert part["functionCall"]["args"]["days"] == 1 and candidate["finishReason"] == "STOP"
    assert sse_json(streamed.text)[0]["candidates"][0]["content"]["parts"] == [part]
    text = as_json.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text)["reply"].startswith(PROMPT)
