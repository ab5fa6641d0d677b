"""Anthropic Messages answers: their shapes, and a whole message read as an OpenAI completion.

In JSON mode the answer arrives as the input of the `json_answer` tool (see `bidders.anthropic`);
that input becomes the message content, and the call is not shown to the client as a tool call.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from bidders import wirejson
from bidders.completion import (
    AssistantOut,
    ChatCompletion,
    ChatResult,
    FinishReason,
    Stamp,
    ToolCallOut,
    completion_usage,
)
from bidders.conversation import JSON
from bidders.errors import UpstreamBadResponse
from bidders.protocol import load_json, shape_error
from clearing.types import Usage

API = "anthropic"
JSON_TOOL = "json_answer"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None, called_tools: bool) -> FinishReason:
    """The OpenAI finish reason for Anthropic's `stop_reason`."""
    reason = _FINISH.get(stop_reason or "", "stop")
    return "stop" if reason == "tool_calls" and not called_tools else reason


class AnthropicUsage(BaseModel):
    """A message's token counts, as Anthropic reports them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def usage(self) -> Usage:
        """Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI does not."""
        read, written = self.cache_read_input_tokens or 0, self.cache_creation_input_tokens or 0
        return Usage((self.input_tokens or 0) + read + written, self.output_tokens or 0, read)


class ContentBlock(BaseModel):
    """One block of a message's content: text, a tool call (`tool_use`), thinking, ..."""

    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: JSON | None = None

    def is_tool_call(self) -> bool:
        return self.type == "tool_use" and self.name != JSON_TOOL


class _Message(BaseModel):
    content: list[ContentBlock]
    stop_reason: str | None = None
    usage: AnthropicUsage


def read_answer(data: bytes, stamp: Stamp) -> ChatResult:
    """A successful (2xx) Messages answer as an OpenAI chat completion.

    Raises:
        UpstreamBadResponse: the body is not a message, or the message says nothing.
    """
    try:
        message = _Message.model_validate(load_json(data, API))
    except ValidationError as exc:
        raise shape_error(API, "answer", exc) from None
    usage = message.usage.usage()
    body: ChatCompletion = {
        "id": stamp.id,
        "object": "chat.completion",
        "created": stamp.created,
        "model": stamp.model,
        "choices": [
            {
                "index": 0,
                "message": _answer(message),
                "finish_reason": finish_reason(
                    message.stop_reason, any(b.is_tool_call() for b in message.content)
                ),
            }
        ],
        "usage": completion_usage(usage),
    }
    return ChatResult(body, usage)


def _answer(message: _Message) -> AssistantOut:
    texts = [block.text for block in message.content if block.type == "text"]
    calls: list[ToolCallOut] = [
        {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": _dump(b.input)}}
        for b in message.content
        if b.is_tool_call()
    ]
    answers = [b.input for b in message.content if b.type == "tool_use" and b.name == JSON_TOOL]
    content = _dump(answers[0]) if answers else "".join(texts)
    if not content and not calls and message.stop_reason not in ("max_tokens", "refusal"):
        raise UpstreamBadResponse(f"{API} answered with no content")
    out: AssistantOut = {"role": "assistant", "content": content or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return out


def _dump(value: JSON | None) -> str:
    return wirejson.dumps(value or {}).decode()
