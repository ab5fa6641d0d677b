"""Simulated OpenAI provider on a real socket: the documented completion and stream, the SDK,
auth and request errors."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from bidders.simulated.server import SimulatedProvider
from tests.bidders.simulated_kit import (
    KEY,
    PROMPT,
    PROMPT_TOKENS,
    config,
    openai_chat,
    openai_head,
    openai_usage,
    sse_events,
    sse_json,
)


async def test_openai_completion_is_the_documented_object(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config(models=("gpt-4o",))) as provider:
        assert provider.base_url == f"http://127.0.0.1:{provider.port}/v1"
        resp = await openai_chat(sim_client, provider)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-request-id"] == "req_sim00000001"
    body = resp.json()
    assert isinstance(body.pop("created"), int)
    message = {"role": "assistant", "content": PROMPT, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    expected = {**openai_head("chat.completion"), "choices": [choice]}
    assert body == {**expected, "usage": openai_usage(PROMPT_TOKENS, 5)}


async def test_openai_stream_chunks_usage_and_done(sim_client: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(
            sim_client, provider, stream=True, stream_options={"include_usage": True}, max_tokens=3
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
    sim_client: httpx.AsyncClient,
) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        resp = await openai_chat(sim_client, provider, stream=True)
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
    sim_client: httpx.AsyncClient, headers: dict[str, str], code: str | None, message_start: str
) -> None:
    async with SimulatedProvider("openai", config()) as provider:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        url = f"{provider.base_url}/chat/completions"
        resp = await sim_client.post(url, json=body, headers=headers)
        stats = provider.stats.as_dict()
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["message"].startswith(message_start)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, code)
    assert "sk-wrong-key" not in error["message"]  # keys are redacted, as OpenAI does
    assert stats["requests"] == 1 and stats["tokens_in"] == 0


async def test_openai_unknown_model_bad_json_and_unknown_route(
    sim_client: httpx.AsyncClient,
) -> None:
    async with SimulatedProvider("openai", config(models=("gpt-4o",))) as provider:
        unknown = await openai_chat(sim_client, provider, model="gpt-9")
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        url = f"{provider.base_url}/chat/completions"
        broken = await sim_client.post(url, content=b"{not json", headers=headers)
        empty = await openai_chat(sim_client, provider, messages=[])
        nowhere = await sim_client.post(f"{provider.base_url}/completions", headers=headers)
        models = await sim_client.get(f"{provider.base_url}/models", headers=headers)
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
