"""Deterministic replies: token counts, reply text, JSON and tool-call arguments from a prompt."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# A token is about four characters of English (OpenAI's rule of thumb); per-message overhead and
# reply priming follow OpenAI's chat counting recipe. Exact tokenizers are not the point here:
# the counts must be deterministic, plausible, and the same on every run.
TOKEN_CHARS = 4
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
IMAGE_TOKENS = 85
ECHO_WORDS = 32
TOOL_TRIGGER = "call a tool"
MAX_SCHEMA_DEPTH = 6
VOCAB = (
    "market auction offer bid price token model provider clearing fill quote budget "
    "latency stream capacity request answer simulated reply window cache signal order "
    "spread depth book trade settle margin value yield"
).split()

# Filler words come from one fixed pseudo-random cycle, entered at a point the prompt decides:
# as deterministic as a seeded RNG per request, and a slice instead of a draw per word.
FILLER = tuple(" " + word for word in random.Random(0).choices(VOCAB, k=4_096))

ToolMode = Literal["auto", "none", "required"]
Finish = Literal["stop", "length", "tool_call"]


def count_text(text: str) -> int:
    return -(-len(text) // TOKEN_CHARS)


def split_pieces(text: str) -> tuple[str, ...]:
    """Cut text into token-sized pieces (the unit of streaming and of completion tokens)."""
    return tuple(text[i : i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Mapping[str, object]  # a JSON schema (Gemini's upper-case types included)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request in vendor-neutral terms: what generation and the prompt cache need."""

    model: str
    last_user_text: str  # the final message's text when a user wrote it, else ""
    prompt_tokens: int
    prefix_key: str  # digest of everything before the final message
    prefix_tokens: int
    max_tokens: int | None = None
    stream: bool = False
    tools: tuple[ToolSpec, ...] = ()
    tool_mode: ToolMode = "auto"
    forced_tool: str | None = None
    json_mode: bool = False
    json_schema: Mapping[str, object] | None = None
    prefill: str = ""  # Anthropic: the assistant turn the reply continues
    include_usage: bool = False  # OpenAI: stream_options.include_usage
    cache_marked: bool = True  # Anthropic caches only what cache_control marks


class Transcript:
    """Reads messages in order and keeps their token count and a digest of the prefix."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._prefix_digest = self._digest.copy()
        self.tokens = REPLY_PRIMING
        self._prefix_tokens = 0
        self._last_user_text = ""

    def add(
        self, role: str, texts: Sequence[str], *, other: Sequence[str] = (), images: int = 0
    ) -> None:
        """One message: `texts` are what its author wrote, `other` is counted but never echoed."""
        self._prefix_digest = self._digest.copy()
        self._prefix_tokens = self.tokens
        for part in (role, *texts, *other, str(images)):
            self._digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
        self.tokens += MESSAGE_OVERHEAD + images * IMAGE_TOKENS
        self.tokens += sum(count_text(t) for t in texts) + sum(count_text(o) for o in other)
        self._last_user_text = "\n".join(texts) if role == "user" else ""

    def add_prefill(self, text: str) -> None:
        """An assistant turn to continue: counted, but the reply still answers the user before."""
        self.tokens += MESSAGE_OVERHEAD + count_text(text)

    def prompt(self, model: str) -> Prompt:
        """The prompt so far; parsers fill in the request's options with dataclasses.replace."""
        return Prompt(
            model=model,
            last_user_text=self._last_user_text,
            prompt_tokens=self.tokens,
            prefix_key=self._prefix_digest.hexdigest(),
            prefix_tokens=self._prefix_tokens,
        )


@dataclass(frozen=True, slots=True)
class SimUsage:
    prompt_tokens: int  # all of them, cached ones included
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    key: str  # a stable hex id; each API adds its own prefix (call_, toolu_)
    name: str
    arguments: str  # compact JSON text
    pieces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    pieces: tuple[str, ...]
    finish: Finish
    usage: SimUsage
    tool_call: ToolCall | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def generate(
    prompt: Prompt,
    reply_tokens: int,
    *,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    empty: bool = False,
) -> Reply:
    """The reply a prompt always gets: at most `reply_tokens` long, cut by the request's limit."""
    limit = reply_tokens if prompt.max_tokens is None else prompt.max_tokens
    budget = max(0, min(limit, reply_tokens))
    seed = _seed(prompt)
    tool_call = None if empty else _tool_call(prompt, seed)
    pieces: tuple[str, ...] = ()
    finish: Finish = "stop"
    if tool_call is not None:
        finish = "tool_call"
    elif prompt.json_mode and not empty:
        pieces, finish = _json_pieces(prompt, budget, seed)
    elif not empty:
        pieces = _text_pieces(prompt.last_user_text, budget, seed)
        finish = "length" if limit < reply_tokens else "stop"
    produced = len(pieces) if tool_call is None else 1 + len(tool_call.pieces)
    usage = SimUsage(prompt.prompt_tokens, produced, cached_tokens, cache_write_tokens)
    return Reply(pieces, finish, usage, tool_call)


def _seed(prompt: Prompt) -> int:
    text = f"{prompt.model}\x00{prompt.prefix_key}\x00{prompt.last_user_text}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8])


def _filler(seed: int, count: int) -> tuple[str, ...]:
    """`count` filler pieces (each " word") from the cycle, starting where `seed` says."""
    start = seed % len(FILLER)
    out = FILLER[start : start + count]
    while len(out) < count:
        out += FILLER[: count - len(out)]
    return out


def _text_pieces(text: str, count: int, seed: int) -> tuple[str, ...]:
    """The prompt's first words echoed back, then filler: `count` pieces in all."""
    echo = text.split()[: min(count, ECHO_WORDS)]
    pieces = tuple(word if i == 0 else " " + word for i, word in enumerate(echo))
    pieces += _filler(seed, count - len(pieces))
    if pieces and not echo:
        pieces = (pieces[0][1:], *pieces[1:])
    return pieces


def _json_pieces(prompt: Prompt, budget: int, seed: int) -> tuple[tuple[str, ...], Finish]:
    """Valid JSON within the budget, by shrinking the words in it; cut only when even {} is long."""
    schema = prompt.json_schema or {"type": "object", "properties": {"reply": {"type": "string"}}}
    words = _text_pieces(prompt.last_user_text, budget, seed)

    def render(n: int) -> str:
        text = json.dumps(sample_schema(schema, "".join(words[:n])), ensure_ascii=False)
        return text[len(prompt.prefill) :] if text.startswith(prompt.prefill) else text

    low, high = 0, len(words)
    while low < high:  # the largest n whose JSON fits the budget
        mid = (low + high + 1) // 2
        low, high = (mid, high) if count_text(render(mid)) <= budget else (low, mid - 1)
    pieces = split_pieces(render(low))
    if len(pieces) > budget:
        return pieces[:budget], "length"
    return pieces, "stop"


def _tool_call(prompt: Prompt, seed: int) -> ToolCall | None:
    if not prompt.tools or prompt.tool_mode == "none":
        return None
    text = prompt.last_user_text.lower()
    named = [t for t in prompt.tools if f"call {t.name.lower()}" in text]
    forced = [t for t in prompt.tools if t.name == prompt.forced_tool]
    wanted = prompt.tool_mode == "required" or bool(forced) or bool(named) or TOOL_TRIGGER in text
    if not wanted:
        return None
    tool = (forced or named or list(prompt.tools))[0]
    value = sample_schema(tool.parameters, "".join(_text_pieces("", 3, seed)))
    arguments = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    key = hashlib.sha256(f"{seed}:{tool.name}".encode()).hexdigest()[:24]
    return ToolCall(key, tool.name, arguments, split_pieces(arguments))


def sample_schema(schema: Mapping[str, object], text: str, depth: int = 0) -> object:
    """A value that satisfies the common parts of a JSON schema; strings get `text`."""
    if depth > MAX_SCHEMA_DEPTH:
        return None
    for key in ("const", "enum"):
        if key in schema:
            value = schema[key]
            return value[0] if key == "enum" and isinstance(value, list) and value else value
    for key in ("anyOf", "oneOf", "allOf", "any_of"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], Mapping):
            return sample_schema(options[0], text, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        props = schema.get("properties")
        items = props.items() if isinstance(props, Mapping) else ()
        return {k: sample_schema(v, text, depth + 1) for k, v in items if isinstance(v, Mapping)}
    if kind == "array":
        item = schema.get("items")
        return [sample_schema(item, text, depth + 1)] if isinstance(item, Mapping) else []
    simple: dict[str, object] = {"integer": 1, "number": 1.5, "boolean": True, "null": None}
    return simple.get(kind, text)
