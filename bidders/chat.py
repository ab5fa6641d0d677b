"""The OpenAI Chat Completions request as clients send it, and the answer shapes sent back."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clearing.types import Feature, Usage

JSON = dict[str, object]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


class _Open(BaseModel):
    """Strict types; unknown fields are kept, so OpenAI-compatible providers still get them."""

    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageUrl(_Open):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None

    def inline(self) -> tuple[str, str] | None:
        """(media type, base64 data) of a `data:` URL, or None for any other URL."""
        match = _DATA_URL.fullmatch(self.url)
        return (match[1], match[2]) if match else None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"]
    function: FunctionCall

    def parsed_arguments(self) -> JSON | None:
        """The arguments as a JSON object (empty for ""), or None when they are not one."""
        try:
            value = json.loads(self.function.arguments or "{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class SystemMessage(_Open):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(_Open):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(_Open):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


class FunctionDef(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: JSON | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: FunctionName


class TextFormat(_Open):
    type: Literal["text"]


class JsonObjectFormat(_Open):
    type: Literal["json_object"]


class JsonSchemaSpec(_Open):
    name: str
    description: str | None = None
    schema_: JSON | None = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_Open):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    """A chat completion request; `auction` is parsed elsewhere, extras pass through."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    seed: int | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    auction: JSON | None = None

    @property
    def needs_tools(self) -> bool:
        return bool(self.tools)

    @property
    def needs_vision(self) -> bool:
        return any(
            isinstance(part, ImagePart)
            for message in self.messages
            if isinstance(message, UserMessage) and isinstance(message.content, list)
            for part in message.content
        )

    @property
    def needs_json_mode(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    @property
    def wants_stream(self) -> bool:
        return self.stream is True

    @property
    def include_usage(self) -> bool:
        """Whether a streaming client asked for the final usage-only chunk."""
        return self.wants_stream and bool(self.stream_options and self.stream_options.include_usage)

    @property
    def output_cap(self) -> int | None:
        """The client's output limit: max_completion_tokens, else max_tokens, else None."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def features(self) -> frozenset[Feature]:
        """The catalogue features this request needs an offer to have."""
        wanted: dict[Feature, bool] = {
            "tools": self.needs_tools,
            "vision": self.needs_vision,
            "json_mode": self.needs_json_mode,
            "streaming": self.wants_stream,
        }
        return frozenset(feature for feature, needed in wanted.items() if needed)


def text_of(content: str | list[TextPart] | None) -> str:
    """The text of a message's content, its parts joined by newlines."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text for part in content)


def explain(error: ValidationError) -> tuple[str, str]:
    """A client-facing message and `param` path (like `messages[1].content`) for a bad body."""
    errors = error.errors(include_url=False)
    # Of a union's failed branches, the one that got furthest says most about the mistake.
    first = max(errors, key=lambda e: len(e["loc"]))
    param, previous = "", None
    for item in first["loc"]:
        if isinstance(item, int):
            param += f"[{item}]"
        elif not _is_union_label(item, previous):
            param += f".{item}" if param else item
        previous = item
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{param or 'body'}: {first['msg']}{suffix}", param


def _is_union_label(item: str, previous: str | int | None) -> bool:
    """Pydantic puts the tag of a tagged union, or the member of a plain union, into error
    locations; a client never wrote those, so they stay out of the `param` path."""
    if "[" in item or item in ("str", "NamedToolChoice"):
        return True
    return item in _TAGS and (isinstance(previous, int) or previous == "response_format")


_TAGS = frozenset(
    {"system", "developer", "user", "assistant", "tool", "text", "image_url"}
    | {"json_object", "json_schema"}
)


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
