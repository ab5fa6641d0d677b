"""The messages of an OpenAI chat request: the five roles, their content parts and tool calls."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JSON = dict[str, object]

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


class OpenModel(BaseModel):
    """Strict types; unknown fields are kept, so OpenAI-compatible providers still get them."""

    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(OpenModel):
    type: Literal["text"]
    text: str


class ImageUrl(OpenModel):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None

    def inline(self) -> tuple[str, str] | None:
        """(media type, base64 data) of a `data:` URL, or None for any other URL."""
        match = _DATA_URL.fullmatch(self.url)
        return (match[1], match[2]) if match else None


class ImagePart(OpenModel):
    type: Literal["image_url"]
    image_url: ImageUrl


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(OpenModel):
    name: str
    arguments: str


class ToolCall(OpenModel):
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


class SystemMessage(OpenModel):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(OpenModel):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(OpenModel):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(OpenModel):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(OpenModel):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


def text_of(content: str | list[TextPart] | None) -> str:
    """The text of a message's content, its parts joined by newlines."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text for part in content)
