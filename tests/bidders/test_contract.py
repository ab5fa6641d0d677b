"""Replays every adapter fixture: the HTTP call built, and the answer, chunks or error read back.

One JSON file per case under fixtures/<api>/{exemplary,supplemental}/ holds `request` (the
client's body), `upstream`, then `expected_http` (absent when the request cannot be expressed in
that API, with `expected_error` instead), then `mock_reply` with `expected_result` or
`expected_error`, or `mock_stream` (the body in pieces) with `expected_chunks`, `expected_usage`
and, for a stream that fails, `expected_error`. Every comparison is of whole values, and what
would reach the client must also parse as the official OpenAI SDK's types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion as SdkCompletion
from openai.types.chat import ChatCompletionChunk as SdkChunk

from bidders.chat import ChatRequest
from bidders.completion import ChatCompletionChunk, Stamp
from bidders.errors import ProviderError, UpstreamRateLimited
from bidders.protocol import Adapter, HttpReply, Upstream
from bidders.registry import APIS
from clearing.types import Usage

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(FIXTURES.glob("*/*/*.json"))
KINDS = ("exemplary", "supplemental")
ADAPTERS: dict[str, Adapter] = {str(api): adapter for api, adapter in APIS.items()}
Case = dict[str, Any]  # one fixture file's JSON


def _name(path: Path) -> str:
    return "/".join(path.relative_to(FIXTURES).with_suffix("").parts)


def _error(error: ProviderError) -> dict[str, object]:
    described: dict[str, object] = {
        "type": type(error).__name__,
        "status": error.status,
        "message": error.message,
        "retryable": error.retryable,
    }
    if isinstance(error, UpstreamRateLimited):
        described["retry_after_ms"] = error.retry_after_ms
    return described


def _usage(usage: Usage | None) -> dict[str, object] | None:
    if usage is None:
        return None
    assert not usage.estimated  # adapters only report what the provider said
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
    }


def _reply(mock: Case) -> HttpReply:
    text = mock["body_text"] if "body_text" in mock else json.dumps(mock["body"])
    return HttpReply(mock["status"], mock.get("headers", {}), text.encode())


@pytest.mark.parametrize("path", CASES, ids=_name)
def test_fixture(path: Path) -> None:
    api, kind = path.parts[-3], path.parts[-2]
    assert kind in KINDS, f"{path.parent} is neither exemplary nor supplemental"
    case: Case = json.loads(path.read_text(encoding="utf-8"))
    if kind == "exemplary":
        assert "expected_error" not in case, "exemplary cases never expect errors"
    adapter = ADAPTERS[api]  # a KeyError here names a folder of an API with no adapter
    request = ChatRequest.model_validate(case["request"])
    upstream = Upstream(**case["upstream"])
    stamp = Stamp("chatcmpl-fixture", 1767225600, request.model)
    if "expected_http" not in case:
        with pytest.raises(ProviderError) as caught:
            adapter.build_request(request, upstream, stream=request.wants_stream)
        assert _error(caught.value) == case["expected_error"]
        return
    call = adapter.build_request(request, upstream, stream=request.wants_stream)
    built = {
        "method": call.method,
        "url": call.url,
        "headers": dict(call.headers),
        "body": json.loads(call.body),
    }
    assert built == case["expected_http"]
    if "mock_reply" in case:
        _replay_reply(adapter, case, upstream, stamp)
    else:
        _replay_stream(adapter, case, stamp, include_usage=request.include_usage)


def _replay_reply(adapter: Adapter, case: Case, upstream: Upstream, stamp: Stamp) -> None:
    reply = _reply(case["mock_reply"])
    if "expected_error" in case:
        with pytest.raises(ProviderError) as caught:
            adapter.parse_response(reply, upstream=upstream, stamp=stamp)
        assert _error(caught.value) == case["expected_error"]
        assert upstream.api_key is None or upstream.api_key not in str(caught.value)
        return
    result = adapter.parse_response(reply, upstream=upstream, stamp=stamp)
    got = {"body": result.body, "usage": _usage(result.usage)}
    assert got == case["expected_result"]
    SdkCompletion.model_validate(json.loads(json.dumps(result.body)))  # what the OpenAI SDK reads


def _replay_stream(adapter: Adapter, case: Case, stamp: Stamp, *, include_usage: bool) -> None:
    decoder = adapter.stream_decoder(stamp=stamp, include_usage=include_usage)
    chunks: list[ChatCompletionChunk] = []
    error: dict[str, object] | None = None
    try:
        for piece in case["mock_stream"]:
            chunks.extend(decoder.feed(piece.encode()))
        chunks.extend(decoder.close())
    except ProviderError as exc:
        error = _error(exc)
    assert chunks == case["expected_chunks"]
    assert _usage(decoder.usage) == case["expected_usage"]
    assert error == case.get("expected_error")
    for chunk in json.loads(json.dumps(chunks)):
        SdkChunk.model_validate(chunk)
