"""Anthropic Messages: OpenAI chat requests to `/v1/messages`, and its answers and events back.

JSON mode has no switch of its own in this API, so it becomes one more tool, `json_answer`, whose
input schema is the requested one (Anthropic's documented way to get JSON out). The model is made
to call it, or some tool when the client has tools too, and its input comes back as the message
content; a client tool with that same name would be taken for it.

Request fields with no counterpart in this API (seed, penalties, logprobs, logit_bias) are left
out; temperature is capped at 1, the top of Anthropic's range.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from bidders.chat import (
    JSON,
    AssistantMessage,
    AssistantOut,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChatResult,
    DeveloperMessage,
    FinishReason,
    ImageUrl,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    Stamp,
    SystemMessage,
    ToolCall,
    ToolCallDelta,
    ToolCallOut,
    UserMessage,
    chunk,
    completion_usage,
    text_of,
    usage_chunk,
)
from bidders.errors import ProviderError, UpstreamBadResponse, UpstreamRejected
from bidders.protocol import (
    DEFAULT_MAX_TOKENS,
    HttpCall,
    HttpReply,
    Upstream,
    add_turn,
    dump_json,
    error_message,
    is_success,
    load_json,
    provider_error,
    retry_after_ms,
    shape_error,
    user_parts,
)
from bidders.sse import SseParser
from clearing.types import Usage

API = "anthropic"
VERSION = "2023-06-01"
JSON_TOOL = "json_answer"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The status each `error.type` comes with, for errors that arrive inside a 200 event stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicAdapter:
    def build_request(self, req: ChatRequest, upstream: Upstream, *, stream: bool) -> HttpCall:
        if req.n is not None and req.n > 1:
            raise UpstreamRejected(f"{API} gives one choice per request; n > 1 is not possible")
        system, messages = _conversation(req.messages)
        cap = req.output_cap or upstream.max_output_tokens or DEFAULT_MAX_TOKENS
        body: JSON = {"model": upstream.upstream_model, "max_tokens": cap, "messages": messages}
        if system:
            body["system"] = "\n\n".join(system)
        tools = [
            _tool(tool.function.name, tool.function.description, tool.function.parameters)
            for tool in req.tools or []
        ]
        if req.needs_json_mode:
            tools.append(_json_tool(req))
        if tools:
            body["tools"] = tools
            if (choice := _tool_choice(req)) is not None:
                body["tool_choice"] = choice
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop_sequences:
            body["stop_sequences"] = req.stop_sequences
        if req.user:
            body["metadata"] = {"user_id": req.user}
        if stream:
            body["stream"] = True
        headers = {"content-type": "application/json", "anthropic-version": VERSION}
        if upstream.api_key:
            headers["x-api-key"] = upstream.api_key
        url = f"{upstream.base_url.rstrip('/')}/v1/messages"
        return HttpCall("POST", url, headers, dump_json(body))

    def parse_response(self, reply: HttpReply, *, upstream: Upstream, stamp: Stamp) -> ChatResult:
        if not is_success(reply.status):
            raise self.parse_error(reply, upstream=upstream)
        try:
            message = _Message.model_validate(load_json(reply.body, API))
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
                    "finish_reason": _finish(
                        message.stop_reason, any(b.is_tool_call() for b in message.content)
                    ),
                }
            ],
            "usage": completion_usage(usage),
        }
        return ChatResult(body, usage)

    def stream_decoder(self, *, stamp: Stamp, include_usage: bool) -> AnthropicStream:
        return AnthropicStream(stamp, include_usage=include_usage)

    def parse_error(self, reply: HttpReply, *, upstream: Upstream) -> ProviderError:
        message = error_message(reply.body, upstream.api_key)
        return provider_error(API, reply.status, message, retry_after_ms=retry_after_ms(reply))


def _conversation(messages: list[Message]) -> tuple[list[str], list[JSON]]:
    """System texts, and turns that alternate as Anthropic requires (same-role runs merged)."""
    system: list[str] = []
    turns: list[tuple[str, list[JSON]]] = []
    for message in messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            if text := text_of(message.content):
                system.append(text)
            continue
        if isinstance(message, UserMessage):
            role, blocks = "user", user_parts(message, _text, _image)
        elif isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(message)
        else:
            result = {"tool_use_id": message.tool_call_id, "content": text_of(message.content)}
            role, blocks = "user", [{"type": "tool_result", **result}]
        add_turn(turns, role, blocks)
    return system, [{"role": role, "content": blocks} for role, blocks in turns]


def _assistant_blocks(message: AssistantMessage) -> list[JSON]:
    return _text(text_of(message.content)) + [_tool_use(call) for call in message.tool_calls or []]


def _text(text: str) -> list[JSON]:
    return [{"type": "text", "text": text}] if text else []  # Anthropic refuses empty text blocks


def _image(image: ImageUrl) -> JSON:
    inline = image.inline()
    if inline:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": inline[0], "data": inline[1]},
        }
    if image.url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    raise UpstreamRejected(f"{API} takes images as base64 data: URLs or http(s) URLs")


def _tool_use(call: ToolCall) -> JSON:
    arguments = call.parsed_arguments()
    if arguments is None:
        raise UpstreamRejected(f"{API} needs tool call {call.id!r} arguments as a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def _tool(name: str, description: str | None, schema: JSON | None) -> JSON:
    tool: JSON = {"name": name}
    if description:
        tool["description"] = description
    tool["input_schema"] = schema or {"type": "object", "properties": {}}
    return tool


def _json_tool(req: ChatRequest) -> JSON:
    spec = req.response_format
    schema: JSON = {"type": "object"}
    if isinstance(spec, JsonSchemaFormat) and spec.json_schema.schema_:
        schema = spec.json_schema.schema_
    return _tool(JSON_TOOL, "Give the answer as this tool's input.", schema)


def _tool_choice(req: ChatRequest) -> JSON | None:
    """Anthropic's tool_choice. In JSON mode the JSON answer is forced, unless the client's own
    tools may be called, in which case the model must call one tool or the other."""
    picked = req.tool_choice
    choice: JSON
    if req.needs_json_mode and (not req.tools or picked == "none"):
        choice = {"type": "tool", "name": JSON_TOOL}
    elif req.needs_json_mode and picked in (None, "auto"):
        choice = {"type": "any"}
    elif isinstance(picked, NamedToolChoice):
        choice = {"type": "tool", "name": picked.function.name}
    elif picked == "none":
        return {"type": "none"}
    elif picked is None and req.parallel_tool_calls is not False:
        return None
    else:
        choice = {"type": "any" if picked == "required" else "auto"}
    if req.parallel_tool_calls is False:
        choice["disable_parallel_tool_use"] = True
    return choice


def _finish(stop_reason: str | None, called_tools: bool) -> FinishReason:
    reason = _FINISH.get(stop_reason or "", "stop")
    return "stop" if reason == "tool_calls" and not called_tools else reason


class _Usage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def usage(self) -> Usage:
        """Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI does not."""
        read, written = self.cache_read_input_tokens or 0, self.cache_creation_input_tokens or 0
        return Usage((self.input_tokens or 0) + read + written, self.output_tokens or 0, read)


class _Block(BaseModel):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: JSON | None = None

    def is_tool_call(self) -> bool:
        return self.type == "tool_use" and self.name != JSON_TOOL


class _Message(BaseModel):
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage


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
    return dump_json(value or {}).decode()


class _Delta(BaseModel):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _Error(BaseModel):
    type: str = "api_error"
    message: str = "(no message)"


class _Start(BaseModel):
    usage: _Usage | None = None


class _Event(BaseModel):
    """Any stream event; which fields it has depends on `type`."""

    type: str
    index: int = 0
    message: _Start | None = None  # message_start
    content_block: _Block | None = None  # content_block_start
    delta: _Delta | None = None  # content_block_delta, message_delta
    usage: _Usage | None = None  # message_delta
    error: _Error | None = None  # error


class AnthropicStream:
    """Anthropic's stream events as OpenAI chunks; `message_stop` ends the stream."""

    def __init__(self, stamp: Stamp, *, include_usage: bool) -> None:
        self._sse = SseParser()
        self._stamp = stamp
        self._include_usage = include_usage
        self._blocks: dict[int, int | str] = {}  # block index: its tool call's index, or its type
        self._tool_calls = 0
        self._usage: _Usage | None = None
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return self._usage.usage() if self._usage else None

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        chunks: list[ChatCompletionChunk] = []
        for event in self._sse.feed(data):
            if self._done:
                break
            try:
                parsed = _Event.model_validate(load_json(event.data, API))
            except ValidationError as exc:
                raise shape_error(API, "event", exc) from None
            chunks.extend(self._on(parsed))
        return chunks

    def close(self) -> list[ChatCompletionChunk]:
        if not self._done:
            raise UpstreamBadResponse(f"{API} stream ended before message_stop")
        return []

    def _on(self, event: _Event) -> list[ChatCompletionChunk]:
        match event.type:
            case "message_start":
                self._add_usage(event.message.usage if event.message else None)
                return [chunk(self._stamp, {"role": "assistant", "content": ""})]
            case "content_block_start":
                return self._start(event.index, event.content_block)
            case "content_block_delta":
                return self._delta(event.index, event.delta)
            case "message_delta":
                self._add_usage(event.usage)
                stop = event.delta.stop_reason if event.delta else None
                return [chunk(self._stamp, {}, _finish(stop, self._tool_calls > 0))]
            case "message_stop":
                self._done = True
                usage = self.usage
                return [usage_chunk(self._stamp, usage)] if self._include_usage and usage else []
            case "error":
                error = event.error or _Error()
                raise provider_error(API, _ERROR_STATUS.get(error.type, 500), error.message)
        return []  # ping, content_block_stop, and event types this code does not know

    def _start(self, index: int, block: _Block | None) -> list[ChatCompletionChunk]:
        if block is None:
            raise UpstreamBadResponse(f"{API} content_block_start without a content_block")
        if block.is_tool_call():
            self._blocks[index] = position = self._tool_calls
            self._tool_calls += 1
            call: ToolCallDelta = {
                "index": position,
                "id": block.id,
                "type": "function",
                "function": {"name": block.name, "arguments": ""},
            }
            return [chunk(self._stamp, {"tool_calls": [call]})]
        self._blocks[index] = "json" if block.type == "tool_use" else block.type
        return [chunk(self._stamp, {"content": block.text})] if block.text else []

    def _delta(self, index: int, delta: _Delta | None) -> list[ChatCompletionChunk]:
        kind = self._blocks.get(index)
        if delta is None or kind is None:
            raise UpstreamBadResponse(f"{API} content_block_delta for no open block")
        if isinstance(kind, int):
            call: ToolCallDelta = {"index": kind, "function": {"arguments": delta.partial_json}}
            return [chunk(self._stamp, {"tool_calls": [call]})] if delta.partial_json else []
        text = {"text": delta.text, "json": delta.partial_json}.get(kind, "")  # not thinking
        return [chunk(self._stamp, {"content": text})] if text else []

    def _add_usage(self, usage: _Usage | None) -> None:
        # message_start has the prompt's counts; message_delta's counts are totals that replace them
        if usage is not None:
            update = usage.model_dump(exclude_none=True)
            self._usage = self._usage.model_copy(update=update) if self._usage else usage
