"""The seam between the simulated server and each vendor's wire format: one Protocol, its types."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Literal, NamedTuple, Protocol, TypeVar

from bidders.simulated.generation import Prompt, Reply
from clearing.types import ApiName

ErrorKind = Literal[
    "bad_request",
    "missing_key",
    "invalid_key",
    "model_not_found",
    "not_found",  # no such route
    "rate_limit",
    "server_error",
    "overloaded",
]
T = TypeVar("T")


class WireError(Exception):
    """A failure to answer in the vendor's error shape; `param` names the field or the model."""

    def __init__(self, kind: ErrorKind, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message or kind)
        self.kind: ErrorKind = kind
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Route:
    action: Literal["generate", "models"]
    model: str | None = None  # from the path (Gemini); else from the body
    stream: bool | None = None  # from the path (Gemini); else from the body


@dataclass(frozen=True, slots=True)
class ReplyMeta:
    serial: int  # this server's request number: makes response ids deterministic
    created: int  # Unix seconds


class Frame(NamedTuple):  # a tuple, not a dataclass: streams build one per token
    data: bytes
    tokens: int = 0  # output tokens it carries; the server paces frames by them


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class WireApi(Protocol):
    """One vendor's HTTP API, without I/O: the server shell does auth order, timing and faults."""

    name: ApiName
    base_path: str  # what the vendor's SDK base URL adds to the host ("/v1" for OpenAI)

    def match(self, method: str, path: str, query: Mapping[str, str]) -> Route | None: ...

    def check_headers(
        self, headers: Mapping[str, str], query: Mapping[str, str], api_key: str | None
    ) -> None:
        """Raise WireError when the credential (or a required header) is missing or wrong."""

    def parse(self, route: Route, body: object) -> Prompt:
        """Read a request body (parsed JSON); raise WireError("bad_request") for invalid ones."""

    def error(self, err: WireError, retry_after_s: int) -> ErrorReply: ...

    def headers(self, meta: ReplyMeta) -> list[tuple[str, str]]: ...

    def body(self, prompt: Prompt, reply: Reply, meta: ReplyMeta) -> bytes: ...

    def stream(
        self, prompt: Prompt, reply: Reply, meta: ReplyMeta, per_chunk: int
    ) -> list[Frame]: ...

    def stream_error(self, err: WireError) -> Frame: ...

    def models(self, models: Sequence[str]) -> bytes: ...


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def jstr(text: str) -> bytes:
    """A JSON string literal; streams build their frames from templates around these."""
    return encode_basestring(text).encode()


def sse(value: object, event: str | None = None, end: bytes = b"\n\n") -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + dumps(value) + end


def get_field(obj: Mapping[str, object], name: str, kind: type[T]) -> T | None:
    """obj[name] when it has the right JSON type, None when absent; else WireError."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError("bad_request", f"{name}: expected {kind.__name__}", param=name)
    return value


def require(obj: Mapping[str, object], name: str, kind: type[T]) -> T:
    """obj[name], which must be there with the right JSON type; else WireError."""
    value = get_field(obj, name, kind)
    if value is None:
        raise WireError("bad_request", f"{name}: Field required", param=name)
    return value


def first(obj: Mapping[str, object], *names: str) -> object:
    """The first of several spellings present (Gemini takes camelCase and snake_case alike)."""
    for name in names:
        if name in obj:
            return obj[name]
    return None


def mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise WireError("bad_request", f"{what}: expected an object", param=what)
    return value


def items(value: object, what: str) -> list[Mapping[str, object]]:
    """A JSON array of objects, or [] when absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise WireError("bad_request", f"{what}: expected an array", param=what)
    return [mapping(item, what) for item in value]


def chunks(pieces: Sequence[str], per_chunk: int) -> list[tuple[str, int]]:
    """Pieces grouped `per_chunk` at a time: (text, tokens) for each streamed delta."""
    if per_chunk == 1:
        return [(piece, 1) for piece in pieces]
    return [
        ("".join(pieces[i : i + per_chunk]), len(pieces[i : i + per_chunk]))
        for i in range(0, len(pieces), per_chunk)
    ]


def delta_frames(before: bytes, pieces: Sequence[str], per_chunk: int, after: bytes) -> list[Frame]:
    """One frame per group of pieces: `before`, the text as a JSON string, `after`."""
    return [Frame(before + jstr(text) + after, n) for text, n in chunks(pieces, per_chunk)]
