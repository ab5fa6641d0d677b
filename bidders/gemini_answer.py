"""Gemini answers: their shapes, and a whole answer read as an OpenAI chat completion.

Gemini may give function calls no id, so those get `call_{stamp id}_{n}`.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from bidders import wirejson
from bidders.completion import (
    AssistantOut,
    ChatCompletion,
    ChatResult,
    Choice,
    FinishReason,
    Stamp,
    ToolCallOut,
    completion_usage,
)
from bidders.conversation import JSON
from bidders.errors import UpstreamBadResponse, UpstreamRejected
from bidders.protocol import load_json, provider_error, shape_error
from clearing.types import Usage

API = "gemini"

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}) | {
    "IMAGE_SAFETY"
}
_RETRY_DELAY = re.compile(r"(\d+(?:\.\d+)?)s")


def retry_delay(body: bytes) -> int | None:
    """The `retryDelay` ("37s") of a google.rpc.RetryInfo detail, in milliseconds."""
    try:
        details = _ErrorBody.model_validate_json(body).error.details
    except ValidationError:
        return None
    for detail in details:
        if match := _RETRY_DELAY.fullmatch(detail.retry_delay or ""):
            return math.ceil(float(match[1]) * 1000)
    return None


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)


class _Detail(_Camel):
    retry_delay: str | None = None


class _ErrorInfo(_Camel):
    code: int = 500
    message: str = "(no message)"
    details: list[_Detail] = Field(default_factory=list)


class _ErrorBody(_Camel):
    error: _ErrorInfo


class _FunctionCall(_Camel):
    name: str
    args: JSON | None = None
    id: str | None = None


class _Part(_Camel):
    text: str | None = None
    thought: bool = False  # a thinking model's reasoning summary, not part of the answer
    function_call: _FunctionCall | None = None


class _Content(_Camel):
    parts: list[_Part] = Field(default_factory=list)


class Candidate(_Camel):
    """One answer of several (`candidateCount`), or its piece in one stream event."""

    content: _Content | None = None
    finish_reason: str | None = None
    index: int = 0

    def text(self) -> str:
        parts = self.content.parts if self.content else []
        return "".join(part.text for part in parts if part.text and not part.thought)

    def calls(self) -> list[_FunctionCall]:
        parts = self.content.parts if self.content else []
        return [part.function_call for part in parts if part.function_call]


class _UsageMetadata(_Camel):
    prompt_token_count: int = 0  # cached tokens included, as OpenAI counts them
    candidates_token_count: int = 0
    thoughts_token_count: int = 0  # billed as output, but not in candidatesTokenCount
    cached_content_token_count: int = 0

    def usage(self) -> Usage:
        output = self.candidates_token_count + self.thoughts_token_count
        return Usage(self.prompt_token_count, output, self.cached_content_token_count)


class _Feedback(_Camel):
    block_reason: str | None = None


class GenerateContentResponse(_Camel):
    """A whole answer, or one stream event (each event is a whole response of its own)."""

    candidates: list[Candidate] = Field(default_factory=list)
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _Feedback | None = None


def load_response(data: bytes | str) -> GenerateContentResponse:
    """A response from a body or a stream event.

    Raises:
        ProviderError: an error event inside a 200 stream.
        UpstreamRejected: Gemini blocked the prompt.
        UpstreamBadResponse: anything else that is not a response.
    """
    raw = load_json(data, API)
    if isinstance(raw.get("error"), dict):  # an error event inside a 200 stream
        error = _ErrorBody.model_validate(raw).error
        raise provider_error(API, error.code, error.message)
    try:
        response = GenerateContentResponse.model_validate(raw)
    except ValidationError as exc:
        raise shape_error(API, "answer", exc) from None
    blocked = response.prompt_feedback.block_reason if response.prompt_feedback else None
    if blocked and not response.candidates:
        raise UpstreamRejected(f"{API} blocked the prompt: {blocked}")
    return response


def read_answer(data: bytes, stamp: Stamp) -> ChatResult:
    """A successful (2xx) generateContent answer as an OpenAI chat completion.

    Raises:
        UpstreamBadResponse: the body is not an answer, or no candidate says anything.
        UpstreamRejected: Gemini blocked the prompt.
        ProviderError: the body is an error after all.
    """
    response = load_response(data)
    if not response.candidates:
        raise UpstreamBadResponse(f"{API} answered with no candidates")
    ids = CallIds(stamp)
    choices = [_choice(candidate, ids) for candidate in response.candidates]
    if not any(_said_something(choice) for choice in choices):
        raise UpstreamBadResponse(f"{API} answered with no content")
    body: ChatCompletion = {
        "id": stamp.id,
        "object": "chat.completion",
        "created": stamp.created,
        "model": stamp.model,
        "choices": choices,
    }
    usage = response.usage_metadata.usage() if response.usage_metadata else None
    if usage:
        body["usage"] = completion_usage(usage)
    return ChatResult(body, usage)


class CallIds:
    """Numbers the function calls of one answer, for those Gemini gave no id."""

    def __init__(self, stamp: Stamp) -> None:
        self._stamp = stamp
        self.count = 0

    def out(self, call: _FunctionCall) -> ToolCallOut:
        call_id = call.id or f"call_{self._stamp.id}_{self.count}"
        self.count += 1
        arguments = wirejson.dumps(call.args or {}).decode()
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }


def finish_reason(candidate: Candidate, called: bool) -> FinishReason:
    """The OpenAI finish reason for a candidate's `finishReason`."""
    if candidate.finish_reason == "MAX_TOKENS":
        return "length"
    if candidate.finish_reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if called else "stop"  # STOP, and OTHER, LANGUAGE, ... alike


def _choice(candidate: Candidate, ids: CallIds) -> Choice:
    calls = [ids.out(call) for call in candidate.calls()]
    text = candidate.text()
    message: AssistantOut = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return {
        "index": candidate.index,
        "message": message,
        "finish_reason": finish_reason(candidate, bool(calls)),
    }


def _said_something(choice: Choice) -> bool:
    message = choice["message"]
    return bool(message["content"] or message.get("tool_calls")) or choice["finish_reason"] in (
        "length",
        "content_filter",
    )
