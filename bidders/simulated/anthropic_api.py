"""Anthropic Messages as a simulated provider speaks it: POST {host}/v1/messages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from bidders.simulated.generation import Prompt, Reply, ToolMode, ToolSpec, Transcript
from bidders.simulated.wire import (
    ErrorKind,
    ErrorReply,
    Frame,
    ReplyMeta,
    Route,
    WireError,
    delta_frames,
    dumps,
    get_field,
    items,
    mapping,
    require,
    sse,
)
from clearing.types import ApiName

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_call": "tool_use"}
# kind -> (status, error.type, default message)
ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    "bad_request": (400, "invalid_request_error", "Invalid request."),
    "missing_key": (401, "authentication_error", "x-api-key header is required"),
    "invalid_key": (401, "authentication_error", "invalid x-api-key"),
    "model_not_found": (404, "not_found_error", ""),
    "not_found": (404, "not_found_error", "Not Found"),
    "rate_limit": (429, "rate_limit_error", "Number of requests has exceeded your rate limit."),
    "server_error": (500, "api_error", "Internal server error"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
}
IMAGE_BLOCKS = frozenset({"image", "document"})


class AnthropicWire:
    name: ApiName = "anthropic"
    base_path = ""

    def match(self, method: str, path: str, query: Mapping[str, str]) -> Route | None:
        if method == "POST" and path == "/v1/messages":
            return Route("generate")
        if method == "GET" and path == "/v1/models":
            return Route("models")
        return None

    def check_headers(
        self, headers: Mapping[str, str], query: Mapping[str, str], api_key: str | None
    ) -> None:
        if api_key is not None:
            given = headers.get("x-api-key", "")
            if not given:
                raise WireError("missing_key")
            if given != api_key:
                raise WireError("invalid_key")
        if not headers.get("anthropic-version"):
            raise WireError("bad_request", "anthropic-version: header is required")

    def parse(self, route: Route, body: object) -> Prompt:
        req = mapping(body, "body")
        model = require(req, "model", str)
        max_tokens = require(req, "max_tokens", int)
        messages = items(require(req, "messages", list), "messages")
        if max_tokens < 1 or not messages:
            raise WireError("bad_request", "max_tokens and messages must not be empty")
        transcript = Transcript()
        system = req.get("system")
        if system:
            transcript.add("system", _texts(system, "system"))
        tools = tuple(
            ToolSpec(str(t.get("name", "")), mapping(t["input_schema"], "tools.input_schema"))
            for t in items(req.get("tools"), "tools")
            if "input_schema" in t  # server tools (web search, ...) have none: not simulated
        )
        if tools:
            transcript.add("tools", (), other=[dumps(req["tools"]).decode()])
        prefill = ""
        if messages[-1].get("role") == "assistant":
            prefill = "".join(_texts(messages[-1].get("content"), "messages.content"))
            messages = messages[:-1]
        for message in messages:
            _add_message(transcript, message)
        if prefill:
            transcript.add_prefill(prefill)
        mode, forced = _tool_choice(req.get("tool_choice"))
        schema = _output_schema(req)
        return replace(
            transcript.prompt(model),
            max_tokens=max_tokens,
            stream=bool(get_field(req, "stream", bool)),
            tools=tools,
            tool_mode=mode,
            forced_tool=forced,
            json_mode=schema is not None or prefill.startswith("{"),
            json_schema=schema,
            prefill=prefill,
            cache_marked='"cache_control"' in dumps(req).decode(),
        )

    def error(self, err: WireError, retry_after_s: int) -> ErrorReply:
        status, kind, message = ERRORS[err.kind]
        if err.kind == "model_not_found":
            message = f"model: {err.param}"
        body = {"type": "error", "error": {"type": kind, "message": err.message or message}}
        headers = (("retry-after", str(retry_after_s)),) if status == 429 else ()
        return ErrorReply(status, dumps(body), headers)

    def headers(self, meta: ReplyMeta) -> list[tuple[str, str]]:
        return [("request-id", f"req_sim{meta.serial:08d}")]

    def body(self, prompt: Prompt, reply: Reply, meta: ReplyMeta) -> bytes:
        content: list[dict[str, object]] = []
        if reply.tool_call is not None:
            call = reply.tool_call
            tool_use = {"type": "tool_use", "id": f"toolu_{call.key}", "name": call.name}
            content.append({**tool_use, "input": json.loads(call.arguments)})
        elif reply.pieces:
            content.append({"type": "text", "text": reply.text})
        message = _message(prompt, reply, meta, content)
        return dumps({**message, "stop_reason": STOP[reply.finish], "usage": _usage(reply)})

    def stream(self, prompt: Prompt, reply: Reply, meta: ReplyMeta, per_chunk: int) -> list[Frame]:
        start = _message(prompt, reply, meta, [])
        start.update(stop_reason=None, usage={**_usage(reply), "output_tokens": 1})
        frames = [Frame(sse({"type": "message_start", "message": start}, "message_start"))]
        call = reply.tool_call
        if call is not None:
            block: dict[str, object] = {"type": "tool_use", "id": f"toolu_{call.key}"}
            block.update(name=call.name, input={})
            frames += _block(block, b'"input_json_delta","partial_json":', call.pieces, per_chunk)
        elif reply.pieces:
            text_block = {"type": "text", "text": ""}
            frames += _block(text_block, b'"text_delta","text":', reply.pieces, per_chunk)
        delta = {"stop_reason": STOP[reply.finish], "stop_sequence": None}
        end = {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 0}}
        end["usage"] = {"output_tokens": reply.usage.completion_tokens}
        frames.append(Frame(sse(end, "message_delta")))
        frames.append(Frame(sse({"type": "message_stop"}, "message_stop")))
        return frames

    def stream_error(self, err: WireError) -> Frame:
        return Frame(b"event: error\n" + b"data: " + self.error(err, 0).body + b"\n\n")

    def models(self, models: Sequence[str]) -> bytes:
        created = "2024-01-01T00:00:00Z"
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": created} for m in models
        ]
        first, last = (models[0], models[-1]) if models else (None, None)
        return dumps({"data": data, "has_more": False, "first_id": first, "last_id": last})


def _message(
    prompt: Prompt, reply: Reply, meta: ReplyMeta, content: list[dict[str, object]]
) -> dict[str, object]:
    return {
        "id": f"msg_sim{meta.serial:08d}",
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
    }


def _block(
    block: Mapping[str, object], delta_kind: bytes, pieces: tuple[str, ...], per_chunk: int
) -> list[Frame]:
    """One content block: start (a tool's name is a token), ping, deltas, stop."""
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    frames = [Frame(sse(start, "content_block_start"), 1 if block["type"] == "tool_use" else 0)]
    frames.append(Frame(sse({"type": "ping"}, "ping")))
    opening = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
    frames += delta_frames(opening + b'{"type":' + delta_kind, pieces, per_chunk, b"}}\n\n")
    frames.append(Frame(sse({"type": "content_block_stop", "index": 0}, "content_block_stop")))
    return frames


def _usage(reply: Reply) -> dict[str, object]:
    usage = reply.usage
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def _texts(content: object, what: str) -> list[str]:
    """The text of a string or of the text blocks in a list of content blocks."""
    if isinstance(content, str):
        return [content]
    return [str(b.get("text", "")) for b in items(content, what) if b.get("type") == "text"]


def _add_message(transcript: Transcript, message: Mapping[str, object]) -> None:
    role = require(message, "role", str)
    if role not in ("user", "assistant"):
        raise WireError("bad_request", f"messages: unexpected role {role!r}", param="messages")
    content = message.get("content")
    blocks = [] if isinstance(content, str) else items(content, "messages.content")
    other = [
        dumps(b.get("input", b.get("content", ""))).decode()
        for b in blocks
        if b.get("type") in ("tool_use", "tool_result")
    ]
    images = sum(1 for b in blocks if b.get("type") in IMAGE_BLOCKS)
    transcript.add(role, _texts(content, "messages.content"), other=other, images=images)


def _tool_choice(choice: object) -> tuple[ToolMode, str | None]:
    if choice is None:
        return "auto", None
    kind = mapping(choice, "tool_choice").get("type")
    if kind == "tool":
        return "required", require(mapping(choice, "tool_choice"), "name", str)
    modes: dict[object, ToolMode] = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in modes:
        raise WireError("bad_request", "tool_choice.type: unknown", param="tool_choice")
    return modes[kind], None


def _output_schema(req: Mapping[str, object]) -> Mapping[str, object] | None:
    """Structured outputs: output_config.format (GA) or output_format (beta)."""
    config = req.get("output_config")
    fmt = mapping(config, "output_config").get("format") if config else req.get("output_format")
    if not fmt:
        return None
    fmt = mapping(fmt, "output_format")
    if fmt.get("type") != "json_schema":
        raise WireError("bad_request", "output_format.type: expected json_schema")
    return mapping(fmt.get("schema") or {}, "output_format.schema")
