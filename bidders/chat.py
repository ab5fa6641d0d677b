"""The OpenAI Chat Completions request as clients send it, and what is wrong with a bad one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError

from bidders.conversation import JSON, ImagePart, Message, OpenModel, UserMessage
from clearing.types import Feature


class FunctionDef(OpenModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: JSON | None = None
    strict: bool | None = None


class Tool(OpenModel):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(OpenModel):
    name: str


class NamedToolChoice(OpenModel):
    type: Literal["function"]
    function: FunctionName


class TextFormat(OpenModel):
    type: Literal["text"]


class JsonObjectFormat(OpenModel):
    type: Literal["json_object"]


class JsonSchemaSpec(OpenModel):
    name: str
    description: str | None = None
    schema_: JSON | None = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(OpenModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(OpenModel):
    include_usage: bool | None = None


class ChatRequest(OpenModel):
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
