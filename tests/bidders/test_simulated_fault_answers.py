"""Simulated providers breaking answers on demand: disconnects, dropped streams, stream error
events, malformed JSON and empty content, in each wire format."""

from __future__ import annotations

import json

import httpx
import pytest

from bidders.simulated.server import SimulatedProvider
from clearing.types import ApiName
from tests.bidders.simulated_fault_kit import APIS, call, config, data_lines, request_for


@pytest.mark.parametrize("api", APIS)
async def test_disconnect_and_dropped_answers(sim_client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        with pytest.raises(httpx.RemoteProtocolError):
            await call(sim_client, api, provider, fault="disconnect")
        with pytest.raises(httpx.RemoteProtocolError):
            await call(sim_client, api, provider, fault="drop_stream")
        url, body, headers = request_for(api, provider, stream=True)
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            headers = {**headers, "x-sim-fault": "drop_stream"}
            async with sim_client.stream("POST", url, json=body, headers=headers) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    received.append(line)
        stats = provider.stats.as_dict()
    text = "\n".join(received)
    assert "data: " in text  # part of the stream arrived ...
    assert "[DONE]" not in text and "message_stop" not in text and "finishReason" not in text
    assert stats["tokens_out"] == 0 and stats["faults_injected"] == 3


@pytest.mark.parametrize("api", APIS)
async def test_stream_error_event(sim_client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        resp = await call(sim_client, api, provider, stream=True, fault="stream_error")
        unary = await call(sim_client, api, provider, fault="stream_error")
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
async def test_malformed_json(sim_client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        unary = await call(sim_client, api, provider, fault="malformed_json")
        stream = await call(sim_client, api, provider, stream=True, fault="malformed_json")
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
async def test_empty_content(sim_client: httpx.AsyncClient, api: ApiName) -> None:
    async with SimulatedProvider(api, config()) as provider:
        body = (await call(sim_client, api, provider, fault="empty_content")).json()
        stream = await call(sim_client, api, provider, stream=True, fault="empty_content")
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
