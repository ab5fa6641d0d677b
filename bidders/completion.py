"""The OpenAI answer shapes sent back: whole completions, stream chunks, and their builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

from clearing.types import Usage

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class Stamp:
    """What every answer is stamped with: its id, creation time (epoch s) and catalogue model."""

    id: str
    created: int
    model: str


class FunctionCallOut(TypedDict):
    name: str
    arguments: str


class ToolCallOut(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantOut(TypedDict):
    role: Literal["assistant"]
    content: str | None
    tool_calls: NotRequired[list[ToolCallOut]]


class Choice(TypedDict):
    index: int
    message: AssistantOut
    finish_reason: str | None


class PromptTokensDetails(TypedDict):
    cached_tokens: int


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[PromptTokensDetails]


class ChatCompletion(TypedDict):
    """The non-streaming answer; OpenAI-compatible providers may add fields, kept as they are."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: NotRequired[CompletionUsage]


class FunctionDelta(TypedDict, total=False):
    name: str
    arguments: str


class ToolCallDelta(TypedDict):
    index: int
    id: NotRequired[str]
    type: NotRequired[Literal["function"]]
    function: FunctionDelta


class Delta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str
    tool_calls: list[ToolCallDelta]


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    finish_reason: str | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[CompletionUsage | None]


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole answer: the OpenAI-shaped body, and the usage the provider reported (or None)."""

    body: ChatCompletion
    usage: Usage | None


def completion_usage(usage: Usage) -> CompletionUsage:
    """The OpenAI usage object; prompt tokens include the cached ones, as OpenAI counts them."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def chunk(
    stamp: Stamp, delta: Delta, finish_reason: str | None = None, index: int = 0
) -> ChatCompletionChunk:
    """One `chat.completion.chunk` with a single choice."""
    return {
        "id": stamp.id,
        "object": "chat.completion.chunk",
        "created": stamp.created,
        "model": stamp.model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
    }


def tool_call_delta(index: int, call: ToolCallOut) -> ToolCallDelta:
    """A whole tool call as one streamed delta."""
    function = call["function"]
    return {
        "index": index,
        "id": call["id"],
        "type": "function",
        "function": {"name": function["name"], "arguments": function["arguments"]},
    }


def usage_chunk(stamp: Stamp, usage: Usage) -> ChatCompletionChunk:
    """The final usage-only chunk that `stream_options.include_usage` asks for."""
    return {
        "id": stamp.id,
        "object": "chat.completion.chunk",
        "created": stamp.created,
        "model": stamp.model,
        "choices": [],
        "usage": completion_usage(usage),
    }
