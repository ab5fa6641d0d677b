"""The adapter contract: one wire API translated to and from OpenAI chat, with no I/O.

An adapter builds the HTTP call for a provider and reads what came back; the HTTP call itself,
timeouts and failover live once, in the forwarder. Failures come out as `ProviderError`s typed by
whose fault they are, so the forwarder decides failover by type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from pydantic import ValidationError

from bidders import wirejson
from bidders.chat import ChatRequest
from bidders.completion import ChatCompletionChunk, ChatResult, Stamp
from bidders.conversation import JSON, ImagePart, ImageUrl, UserMessage
from bidders.errors import (
    ProviderError,
    UpstreamBadResponse,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from clearing.types import Usage

DEFAULT_MAX_TOKENS = (
    4096  # for APIs that require an output cap when neither request nor offer has one
)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where and as whom to call, from the provider's registration and the winning offer.

    `max_output_tokens` is the offer's output limit: the cap used when the request sets none
    (Anthropic requires one; Gemini gets it so the answer stays within what was held).
    """

    base_url: str
    api_key: str | None
    upstream_model: str
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class HttpCall:
    method: Literal["POST"]
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value, looked up without regard to case."""
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), None)


class StreamDecoder(Protocol):
    """Turns a provider's streamed body into OpenAI chunks, fed in pieces of any size.

    Every chunk is for the client except that usage reaches it only when the decoder was made
    with `include_usage=True` (the client's `stream_options.include_usage`); the decoder reads
    usage either way, for settlement.
    """

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        """The chunks completed by `data`. Raises ProviderError for an error event or bad data."""

    def close(self) -> list[ChatCompletionChunk]:
        """The last chunks, at the body's end. Raises UpstreamBadResponse if it was cut short."""

    @property
    def usage(self) -> Usage | None:
        """The usage the provider reported so far, or None."""


class Adapter(Protocol):
    def build_request(self, req: ChatRequest, upstream: Upstream, *, stream: bool) -> HttpCall:
        """The provider call for `req`. Raises UpstreamRejected for what the API cannot express."""

    def parse_response(self, reply: HttpReply, *, upstream: Upstream, stamp: Stamp) -> ChatResult:
        """The answer in a non-streaming reply. Raises ProviderError for errors and bad answers."""

    def stream_decoder(self, *, stamp: Stamp, include_usage: bool) -> StreamDecoder:
        """A decoder for the body of a streaming reply whose status was 2xx."""

    def parse_error(self, reply: HttpReply, *, upstream: Upstream) -> ProviderError:
        """The typed error for a reply whose status was not 2xx (its message without the key)."""


def provider_error(
    api: str, status: int, message: str, *, retry_after_ms: int | None = None
) -> ProviderError:
    """The error for an HTTP status, typed by whose fault it is."""
    text = f"{api} answered HTTP {status}: {message}"
    if status == 429:
        return UpstreamRateLimited(text, status=status, retry_after_ms=retry_after_ms)
    if status == 408:
        return UpstreamTimeout(text, status=status)
    if 500 <= status <= 599:
        return UpstreamUnavailable(text, status=status)
    if 400 <= status <= 499:
        return UpstreamRejected(text, status=status)
    return UpstreamBadResponse(text, status=status)


def error_message(body: bytes, secret: str | None) -> str:
    """The provider's own message (`error.message` in all three APIs; `error` or `message` in
    some OpenAI-compatible servers), else the start of the body; the key cut out if echoed."""
    message = body[:500].decode("utf-8", "replace").strip() or "(empty body)"
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        found = (error.get("message") if isinstance(error, dict) else error, parsed.get("message"))
        message = next((text for text in found if isinstance(text, str) and text), message)
    return message.replace(secret, "[redacted]") if secret else message


def retry_after_ms(reply: HttpReply) -> int | None:
    """`retry-after-ms`, else `retry-after` in seconds or as an HTTP date (relative to `date`)."""
    for name, scale in (("retry-after-ms", 1), ("retry-after", 1000)):
        value = reply.header(name)
        if value is None:
            continue
        try:
            return max(0, math.ceil(float(value) * scale))
        except (ValueError, OverflowError):
            pass
    return _retry_after_date(reply.header("retry-after"), reply.header("date"))


def _retry_after_date(value: str | None, date: str | None) -> int | None:
    # Measured against the reply's own Date header, which keeps the clock out of the adapter.
    if not value or not date:
        return None
    try:
        delta = parsedate_to_datetime(value) - parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(delta.total_seconds() * 1000))


def load_json(data: bytes | str, api: str) -> dict[str, object]:
    """A JSON object from a provider. Raises UpstreamBadResponse for anything else."""
    try:
        value = wirejson.loads(data)
    except ValueError as exc:
        raise UpstreamBadResponse(f"{api} sent malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UpstreamBadResponse(f"{api} sent JSON that is not an object")
    return value


def shape_error(api: str, what: str, error: ValidationError) -> UpstreamBadResponse:
    """The first way a provider's JSON missed the expected shape, said briefly and stably."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(item) for item in first["loc"]) or "the top"
    return UpstreamBadResponse(f"{api} {what} has the wrong shape at {where}: {first['msg']}")


def is_success(status: int) -> bool:
    return 200 <= status <= 299


def user_parts(
    message: UserMessage,
    text: Callable[[str], list[JSON]],
    image: Callable[[ImageUrl], JSON],
) -> list[JSON]:
    """A user message's content in an API's own parts, given how that API writes text and images."""
    if isinstance(message.content, str):
        return text(message.content)
    parts: list[JSON] = []
    for part in message.content:
        parts.extend([image(part.image_url)] if isinstance(part, ImagePart) else text(part.text))
    return parts


def add_turn(turns: list[tuple[str, list[JSON]]], role: str, parts: list[JSON]) -> None:
    """Append a turn, or extend the last one when it has the same role (strict alternation)."""
    if turns and turns[-1][0] == role:
        turns[-1][1].extend(parts)
    else:
        turns.append((role, parts))
