"""Simulated providers on real sockets: each vendor's documented shapes, auth, tools, JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest

from bidders.simulated.behaviour import SimConfig
from bidders.simulated.generation import Transcript, generate, sample_schema
from bidders.simulated.server import SimulatedProvider

KEY = "sk-sim-test-key"
PROMPT = "one two three four five"
PROMPT_TOKENS = 13  # ceil(23 / 4) + 4 per message + 3 priming
VERSION = "2023-06-01"
AUTH_ERROR = "authentication_error"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": VERSION}
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


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Plain HTTP on 127.0.0.1: no TLS, so skip loading a CA bundle for every test.
    async with httpx.AsyncClient(timeout=10, verify=False) as http:
        yield http


def config(**changes: Any) -> SimConfig:
    return SimConfig(**{"api_key": KEY, "reply_tokens": 5, **changes})


# OpenAI ------------------------------------------------------------------------------------------

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


async def test_openai_completion_is_the_documented_object(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(models=("gpt-4o",))) as provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}/v1"
        resp = await openai_chat(client, provider)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-request-id"] == "req_sim00000001"
    body = resp.json()
    assert isinstance(body.pop("created"), int)
    message = {"role": "assistant", "content": PROMPT, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    expected = {**openai_head("chat.completion"), "choices": [choice]}
    assert body == {**expected, "usage": openai_usage(PROMPT_TOKENS, 5)}


async def test_openai_stream_chunks_usage_and_done(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(
            client, provider, stream=True, stream_options={"include_usage": True}, max_tokens=3
        )
    assert resp.headers["content-type"] == "text/event-stream"
    assert sse_events(resp.text)[-1] == (None, "[DONE]")
    chunks = sse_json(resp.text)
    for received in chunks:
        assert isinstance(received.pop("created"), int)
    head = openai_head("chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice], "usage": None}

    assert chunks == [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "one"}),
        chunk({"content": " two"}),
        chunk({"content": " three"}),
        chunk({}, "length"),  # max_tokens 3 cut the 5-token reply
        {**head, "choices": [], "usage": openai_usage(PROMPT_TOKENS, 3)},
    ]


async def test_openai_stream_without_include_usage_has_no_usage_field(
    client: httpx.AsyncClient,
) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(client, provider, stream=True)
    chunks = sse_json(resp.text)
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_sdk_reads_replies_and_streams() -> None:
    async with SimulatedProvider("openai", config()) as provider:
        sdk = openai.AsyncOpenAI(api_key=KEY, base_url=provider.base_url, max_retries=0)
        try:
            messages: Any = [{"role": "user", "content": PROMPT}]
            completion = await sdk.chat.completions.create(model="gpt-4o", messages=messages)
            stream = await sdk.chat.completions.create(
                model="gpt-4o",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            with pytest.raises(openai.AuthenticationError):
                bad = openai.AsyncOpenAI(api_key="wrong", base_url=provider.base_url, max_retries=0)
                await bad.chat.completions.create(model="gpt-4o", messages=messages)
        finally:
            await sdk.close()
    assert completion.choices[0].message.content == PROMPT
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert "".join(parts) == PROMPT


@pytest.mark.parametrize(
    ("headers", "code", "message_start"),
    [
        ({}, None, "You didn't provide an API key."),
        ({"authorization": "Bearer sk-wrong-key"}, "invalid_api_key", "Incorrect API key"),
        ({"authorization": f"Basic {KEY}"}, "invalid_api_key", "Incorrect API key"),
    ],
)
async def test_openai_auth_failures(
    client: httpx.AsyncClient, headers: dict[str, str], code: str | None, message_start: str
) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        url = f"{provider.base_url}/chat/completions"
        resp = await client.post(url, json=body, headers=headers)
        stats = provider.stats.as_dict()
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["message"].startswith(message_start)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, code)
    assert "sk-wrong-key" not in error["message"]  # keys are redacted, as OpenAI does
    assert stats["requests"] == 1 and stats["tokens_in"] == 0


async def test_openai_unknown_model_bad_json_and_unknown_route(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(models=("gpt-4o",))) as provider:
        unknown = await openai_chat(client, provider, model="gpt-9")
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        url = f"{provider.base_url}/chat/completions"
        broken = await client.post(url, content=b"{not json", headers=headers)
        empty = await openai_chat(client, provider, messages=[])
        nowhere = await client.post(f"{provider.base_url}/completions", headers=headers)
        models = await client.get(f"{provider.base_url}/models", headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"
    assert nowhere.status_code == 404
    assert models.json() == {
        "object": "list",
        "data": [{"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "simulated"}],
    }


def weather_tool() -> dict[str, Any]:
    function = {"name": "get_weather", "description": "Weather", "parameters": WEATHER_TOOL_SCHEMA}
    return {"type": "function", "function": function}


async def test_openai_tool_call_when_asked_and_streamed_the_same(
    client: httpx.AsyncClient,
) -> None:
    messages = [{"role": "user", "content": "Please call a tool for Paris"}]
    async with SimulatedProvider("openai", config()) as provider:
        plain = await openai_chat(client, provider, messages=messages, tools=[weather_tool()])
        streamed = await openai_chat(
            client, provider, messages=messages, tools=[weather_tool()], stream=True
        )
        not_asked = await openai_chat(client, provider, tools=[weather_tool()])
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
    client: httpx.AsyncClient, tool_choice: object, called: bool
) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(client, provider, tools=[weather_tool()], tool_choice=tool_choice)
    message = resp.json()["choices"][0]["message"]
    assert ("tool_calls" in message) is called


async def test_openai_json_modes_return_valid_json(client: httpx.AsyncClient) -> None:
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
        loose = await openai_chat(client, provider, response_format={"type": "json_object"})
        strict = await openai_chat(
            client, provider, response_format={"type": "json_schema", "json_schema": json_schema}
        )
        short = await openai_chat(
            client, provider, response_format={"type": "json_object"}, max_tokens=8
        )
    assert set(json.loads(loose.json()["choices"][0]["message"]["content"])) == {"reply"}
    value = json.loads(strict.json()["choices"][0]["message"]["content"])
    assert set(value) == {"answer", "score", "tags", "kind"}
    assert isinstance(value["answer"], str) and value["score"] == 1.5 and value["kind"] == "a"
    assert json.loads(short.json()["choices"][0]["message"]["content"])["reply"]
    assert short.json()["usage"]["completion_tokens"] <= 8


async def test_openai_images_are_accepted_and_counted(client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": PROMPT}, image]
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(client, provider, messages=[{"role": "user", "content": content}])
    assert resp.status_code == 200
    assert resp.json()["usage"]["prompt_tokens"] == PROMPT_TOKENS + 85
    assert resp.json()["choices"][0]["message"]["content"] == PROMPT


async def test_openai_repeated_prefix_is_reported_as_cached(client: httpx.AsyncClient) -> None:
    system = {"role": "system", "content": "You are terse. " * 40}  # 600 chars: 150 tokens
    first = [system, {"role": "user", "content": "first question"}]
    second = [system, {"role": "user", "content": "another question"}]
    async with SimulatedProvider("openai", config(cache_min_tokens=100)) as provider:
        cold = (await openai_chat(client, provider, messages=first)).json()["usage"]
        warm = (await openai_chat(client, provider, messages=second)).json()["usage"]
    prefix_tokens = 3 + 4 + 150  # priming + the system message
    assert cold["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm["prompt_tokens_details"]["cached_tokens"] == prefix_tokens
    assert warm["prompt_tokens"] == prefix_tokens + 4 + 4  # "another question": 16 chars


# Anthropic ---------------------------------------------------------------------------------------


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


async def test_anthropic_message_is_the_documented_object(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config()) as provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}"
        resp = await anthropic_messages(client, provider)
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


async def test_anthropic_stream_event_sequence(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(tokens_per_chunk=2)) as provider:
        resp = await anthropic_messages(client, provider, stream=True, max_tokens=4)
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
    client: httpx.AsyncClient, headers: dict[str, str], status: int, kind: str, message: str
) -> None:
    async with SimulatedProvider("anthropic", config()) as provider:
        resp = await anthropic_messages(client, provider, headers=headers)
    assert resp.status_code == status
    assert resp.json() == {"type": "error", "error": {"type": kind, "message": message}}


async def test_anthropic_unknown_model_and_missing_max_tokens(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("anthropic", config(models=("claude-3-5-haiku",))) as provider:
        unknown = await anthropic_messages(client, provider, model="claude-9")
        url = f"{provider.base_url}/v1/messages"
        body = {"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "hi"}]}
        no_limit = await client.post(url, json=body, headers=ANTHROPIC_HEADERS)
    assert unknown.status_code == 404
    error = {"type": "not_found_error", "message": "model: claude-9"}
    assert unknown.json() == {"type": "error", "error": error}
    assert no_limit.status_code == 400
    assert no_limit.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


async def test_anthropic_tool_use_plain_and_streamed(client: httpx.AsyncClient) -> None:
    tool = {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_TOOL_SCHEMA}
    forced: dict[str, Any] = {
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    async with SimulatedProvider("anthropic", config()) as provider:
        plain = (await anthropic_messages(client, provider, **forced)).json()
        streamed = await anthropic_messages(client, provider, stream=True, **forced)
        declined = await anthropic_messages(client, provider, tools=[tool])
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


async def test_anthropic_json_prefill_images_and_cache_control(client: httpx.AsyncClient) -> None:
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
        json_reply = (await anthropic_messages(client, provider, messages=prefill)).json()
        first = (await anthropic_messages(client, provider, system=system)).json()["usage"]
        second = (await anthropic_messages(client, provider, system=system)).json()["usage"]
        unmarked = (await anthropic_messages(client, provider, system="Be brief. " * 60)).json()
    assert json.loads("{" + json_reply["content"][0]["text"])["reply"].startswith("Answer in JSON")
    prefix = 3 + 4 + 150  # priming + the 600-character system prompt
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (prefix, 0)
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (0, prefix)
    assert second["input_tokens"] == PROMPT_TOKENS - 3  # the user message alone
    assert unmarked["usage"]["cache_read_input_tokens"] == 0  # nothing marked: nothing cached


# Gemini ------------------------------------------------------------------------------------------


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


async def test_gemini_response_is_the_documented_object(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config()) as provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}"
        resp = await gemini_generate(client, provider)
    content = {"parts": [{"text": PROMPT}], "role": "model"}
    candidate = {"content": content, "finishReason": "STOP", "index": 0}
    assert resp.status_code == 200
    assert resp.json() == gemini_response(candidate, 5)


async def test_gemini_sse_stream_chunks(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config(tokens_per_chunk=2)) as provider:
        resp = await gemini_generate(
            client, provider, stream=True, generationConfig={"maxOutputTokens": 5}
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
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    rpc_status: str | None,
) -> None:
    async with SimulatedProvider("gemini", config()) as provider:
        resp = await gemini_generate(client, provider, headers=headers, params=params)
    assert resp.status_code == status
    if rpc_status is not None:
        error = resp.json()["error"]
        assert (error["code"], error["status"]) == (status, rpc_status)
    if status == 400:
        assert resp.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


async def test_gemini_unknown_model_and_missing_contents(client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("gemini", config(models=("gemini-1.5-flash",))) as provider:
        unknown = await gemini_generate(client, provider, model="gemini-9")
        empty = await gemini_generate(client, provider, contents=[])
        no_sse = await client.post(
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


async def test_gemini_function_call_json_mode_and_snake_case(client: httpx.AsyncClient) -> None:
    declaration = {"name": "get_weather", "parameters": {**WEATHER_TOOL_SCHEMA, "type": "OBJECT"}}
    tools = [{"functionDeclarations": [declaration]}]
    any_mode = {"functionCallingConfig": {"mode": "ANY"}}
    async with SimulatedProvider("gemini", config(reply_tokens=40)) as provider:
        called = await gemini_generate(client, provider, tools=tools, toolConfig=any_mode)
        streamed = await gemini_generate(
            client, provider, stream=True, tools=tools, tool_config=any_mode
        )
        as_json = await gemini_generate(
            client, provider, generation_config={"response_mime_type": "application/json"}
        )
    candidate = called.json()["candidates"][0]
    (part,) = candidate["content"]["parts"]
    assert part["functionCall"]["name"] == "get_weather"
    assert part["functionCall"]["args"]["days"] == 1 and candidate["finishReason"] == "STOP"
    assert sse_json(streamed.text)[0]["candidates"][0]["content"]["parts"] == [part]
    text = as_json.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text)["reply"].startswith(PROMPT)


# Generation (pure) -------------------------------------------------------------------------------


async def test_replies_are_deterministic_and_seeded_by_model_and_prompt(
    client: httpx.AsyncClient,
) -> None:
    texts = []
    for model in ("gpt-4o", "gpt-4o", "gpt-4o-mini"):
        async with SimulatedProvider("openai", SimConfig(reply_tokens=20)) as provider:
            resp = await openai_chat(client, provider, model=model)
        texts.append(resp.json()["choices"][0]["message"]["content"])
    assert texts[0] == texts[1]
    assert texts[0].startswith(PROMPT + " ") and len(texts[0].split()) == 20
    assert texts[2].startswith(PROMPT + " ") and texts[2] != texts[0]


def test_schema_sampling_covers_common_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": ["integer", "null"]},
            "flag": {"type": "BOOLEAN"},
            "pick": {"anyOf": [{"type": "number"}, {"type": "string"}]},
            "fixed": {"const": "x"},
            "nested": {"properties": {"inner": {"type": "string"}}},
            "nothing": {"type": "null"},
        },
    }
    assert sample_schema(schema, "words") == {
        "n": 1,
        "flag": True,
        "pick": 1.5,
        "fixed": "x",
        "nested": {"inner": "words"},
        "nothing": None,
    }


def test_generate_never_exceeds_the_request_limit() -> None:
    transcript = Transcript()
    transcript.add("user", ["hello"])
    prompt = transcript.prompt("m")
    for limit in (0, 1, 7, 48, 500):
        reply = generate(replace(prompt, max_tokens=limit), 48)
        assert reply.usage.completion_tokens == len(reply.pieces) == min(limit, 48)
        assert reply.finish == ("length" if limit < 48 else "stop")
