"""Gemini generateContent: OpenAI chat requests to `/v1beta/models/{model}`, and answers back.

Tool and answer schemas go as `parametersJsonSchema` and `responseJsonSchema`, which take JSON
Schema as OpenAI clients write it (the older `parameters` and `responseSchema` take an OpenAPI
subset only). Gemini may give function calls no id, so those get `call_{stamp id}_{n}`.

Request fields with no counterpart in this API (user, logprobs, logit_bias, parallel_tool_calls)
are left out.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from bidders.chat import (
    JSON,
    AssistantMessage,
    AssistantOut,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChatResult,
    Choice,
    Delta,
    DeveloperMessage,
    FinishReason,
    FunctionDef,
    ImageUrl,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    Stamp,
    SystemMessage,
    ToolCall,
    ToolCallOut,
    ToolMessage,
    UserMessage,
    chunk,
    completion_usage,
    text_of,
    tool_call_delta,
    usage_chunk,
)
from bidders.errors import ProviderError, UpstreamBadResponse, UpstreamRejected
from bidders.protocol import (
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

API = "gemini"

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}) | {
    "IMAGE_SAFETY"
}
_IMAGE_SUFFIXES = ("png", "jpeg", "jpg", "webp", "heic", "heif")
_RETRY_DELAY = re.compile(r"(\d+(?:\.\d+)?)s")


class GeminiAdapter:
    def build_request(self, req: ChatRequest, upstream: Upstream, *, stream: bool) -> HttpCall:
        system, contents = _contents(req.messages)
        body: JSON = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        if req.tools:
            body["tools"] = [
                {"functionDeclarations": [_declaration(t.function) for t in req.tools]}
            ]
            if req.tool_choice is not None:
                body["toolConfig"] = {"functionCallingConfig": _calling(req.tool_choice)}
        if config := _generation_config(req, upstream):
            body["generationConfig"] = config
        headers = {"content-type": "application/json"}
        if upstream.api_key:
            headers["x-goog-api-key"] = upstream.api_key
        model = upstream.upstream_model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{upstream.base_url.rstrip('/')}/v1beta/models/{model}:{method}"
        return HttpCall("POST", url, headers, dump_json(body))

    def parse_response(self, reply: HttpReply, *, upstream: Upstream, stamp: Stamp) -> ChatResult:
        if not is_success(reply.status):
            raise self.parse_error(reply, upstream=upstream)
        response = _response(reply.body)
        if not response.candidates:
            raise UpstreamBadResponse(f"{API} answered with no candidates")
        ids = _CallIds(stamp)
        choices = [_choice(candidate, ids) for candidate in response.candidates]
        if not any(_said_something(choice) for choice in choices):
            raise UpstreamBadResponse(f"{API} answered with no content")
        body: ChatCompletion = {
            "id": stamp.id,
            "object": "chat.completion",
            "created": stamp.created,
            "model": stamp.model,
            "choices": choices,
        }
        usage = response.usage_metadata.usage() if response.usage_metadata else None
        if usage:
            body["usage"] = completion_usage(usage)
        return ChatResult(body, usage)

    def stream_decoder(self, *, stamp: Stamp, include_usage: bool) -> GeminiStream:
        return GeminiStream(stamp, include_usage=include_usage)

    def parse_error(self, reply: HttpReply, *, upstream: Upstream) -> ProviderError:
        message = error_message(reply.body, upstream.api_key)
        wait = retry_after_ms(reply)
        if wait is None:
            wait = _retry_delay(reply.body)
        return provider_error(API, reply.status, message, retry_after_ms=wait)


def _contents(messages: list[Message]) -> tuple[list[str], list[JSON]]:
    """System texts, and contents with same-role runs merged (parallel calls' answers share one)."""
    system: list[str] = []
    turns: list[tuple[str, list[JSON]]] = []
    names: dict[str, str] = {}  # tool call id: function name, which a functionResponse must give
    for message in messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            if text := text_of(message.content):
                system.append(text)
            continue
        if isinstance(message, UserMessage):
            role, parts = "user", user_parts(message, _text, _image)
        elif isinstance(message, AssistantMessage):
            names.update({call.id: call.function.name for call in message.tool_calls or []})
            role, parts = "model", _model_parts(message)
        else:
            role, parts = "user", [_function_response(message, names)]
        add_turn(turns, role, parts)
    return system, [{"role": role, "parts": parts} for role, parts in turns]


def _model_parts(message: AssistantMessage) -> list[JSON]:
    return _text(text_of(message.content)) + [_call(call) for call in message.tool_calls or []]


def _text(text: str) -> list[JSON]:
    return [{"text": text}] if text else []


def _image(image: ImageUrl) -> JSON:
    inline = image.inline()
    if inline:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    if not image.url.startswith(("https://", "http://")):
        raise UpstreamRejected(f"{API} takes images as base64 data: URLs or http(s) URLs")
    suffix = image.url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    if suffix not in _IMAGE_SUFFIXES:
        return {"fileData": {"fileUri": image.url}}
    mime = "image/jpeg" if suffix == "jpg" else f"image/{suffix}"
    return {"fileData": {"mimeType": mime, "fileUri": image.url}}


def _call(call: ToolCall) -> JSON:
    arguments = call.parsed_arguments()
    if arguments is None:
        raise UpstreamRejected(f"{API} needs tool call {call.id!r} arguments as a JSON object")
    return {"functionCall": {"name": call.function.name, "args": arguments}}


def _function_response(message: ToolMessage, names: dict[str, str]) -> JSON:
    name = names.get(message.tool_call_id)
    if name is None:
        raise UpstreamRejected(
            f"tool message answers unknown tool_call_id {message.tool_call_id!r}"
        )
    response = {"name": name, "content": text_of(message.content)}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(function: FunctionDef) -> JSON:
    declaration: JSON = {"name": function.name}
    if function.description:
        declaration["description"] = function.description
    if function.parameters:
        declaration["parametersJsonSchema"] = function.parameters
    return declaration


def _calling(choice: str | NamedToolChoice) -> JSON:
    if isinstance(choice, NamedToolChoice):
        return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    return {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}


def _generation_config(req: ChatRequest, upstream: Upstream) -> JSON:
    fields: JSON = {
        "maxOutputTokens": req.output_cap or upstream.max_output_tokens,
        "temperature": req.temperature,
        "topP": req.top_p,
        "stopSequences": req.stop_sequences or None,
        "candidateCount": req.n,
        "seed": req.seed,
        "presencePenalty": req.presence_penalty,
        "frequencyPenalty": req.frequency_penalty,
    }
    if req.needs_json_mode:
        fields["responseMimeType"] = "application/json"
    if isinstance(req.response_format, JsonSchemaFormat):
        fields["responseJsonSchema"] = req.response_format.json_schema.schema_
    return {name: value for name, value in fields.items() if value is not None}


def _retry_delay(body: bytes) -> int | None:
    """The `retryDelay` ("37s") of a google.rpc.RetryInfo detail, in milliseconds."""
    try:
        details = _ErrorBody.model_validate_json(body).error.details
    except ValidationError:
        return None
    for detail in details:
        if match := _RETRY_DELAY.fullmatch(detail.retry_delay or ""):
            return math.ceil(float(match[1]) * 1000)
    return None


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)


class _Detail(_Camel):
    retry_delay: str | None = None


class _ErrorInfo(_Camel):
    code: int = 500
    message: str = "(no message)"
    details: list[_Detail] = Field(default_factory=list)


class _ErrorBody(_Camel):
    error: _ErrorInfo


class _FunctionCall(_Camel):
    name: str
    args: JSON | None = None
    id: str | None = None


class _Part(_Camel):
    text: str | None = None
    thought: bool = False  # a thinking model's reasoning summary, not part of the answer
    function_call: _FunctionCall | None = None


class _Content(_Camel):
    parts: list[_Part] = Field(default_factory=list)


class _Candidate(_Camel):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int = 0

    def text(self) -> str:
        parts = self.content.parts if self.content else []
        return "".join(part.text for part in parts if part.text and not part.thought)

    def calls(self) -> list[_FunctionCall]:
        parts = self.content.parts if self.content else []
        return [part.function_call for part in parts if part.function_call]


class _UsageMetadata(_Camel):
    prompt_token_count: int = 0  # cached tokens included, as OpenAI counts them
    candidates_token_count: int = 0
    thoughts_token_count: int = 0  # billed as output, but not in candidatesTokenCount
    cached_content_token_count: int = 0

    def usage(self) -> Usage:
        output = self.candidates_token_count + self.thoughts_token_count
        return Usage(self.prompt_token_count, output, self.cached_content_token_count)


class _Feedback(_Camel):
    block_reason: str | None = None


class _Response(_Camel):
    candidates: list[_Candidate] = Field(default_factory=list)
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _Feedback | None = None


def _response(data: bytes | str) -> _Response:
    raw = load_json(data, API)
    if isinstance(raw.get("error"), dict):  # an error event inside a 200 stream
        error = _ErrorBody.model_validate(raw).error
        raise provider_error(API, error.code, error.message)
    try:
        response = _Response.model_validate(raw)
    except ValidationError as exc:
        raise shape_error(API, "answer", exc) from None
    blocked = response.prompt_feedback.block_reason if response.prompt_feedback else None
    if blocked and not response.candidates:
        raise UpstreamRejected(f"{API} blocked the prompt: {blocked}")
    return response


class _CallIds:
    """Numbers the function calls of one answer, for those Gemini gave no id."""

    def __init__(self, stamp: Stamp) -> None:
        self._stamp = stamp
        self.count = 0

    def out(self, call: _FunctionCall) -> ToolCallOut:
        call_id = call.id or f"call_{self._stamp.id}_{self.count}"
        self.count += 1
        arguments = dump_json(call.args or {}).decode()
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }


def _finish(candidate: _Candidate, called: bool) -> FinishReason:
    if candidate.finish_reason == "MAX_TOKENS":
        return "length"
    if candidate.finish_reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if called else "stop"  # STOP, and OTHER, LANGUAGE, ... alike


def _choice(candidate: _Candidate, ids: _CallIds) -> Choice:
    calls = [ids.out(call) for call in candidate.calls()]
    text = candidate.text()
    message: AssistantOut = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return {
        "index": candidate.index,
        "message": message,
        "finish_reason": _finish(candidate, bool(calls)),
    }


def _said_something(choice: Choice) -> bool:
    message = choice["message"]
    return bool(message["content"] or message.get("tool_calls")) or choice["finish_reason"] in (
        "length",
        "content_filter",
    )


class GeminiStream:
    """Each event is a whole GenerateContentResponse; the body ends after one with a
    finishReason (Gemini sends no end event of its own)."""

    def __init__(self, stamp: Stamp, *, include_usage: bool) -> None:
        self._sse = SseParser()
        self._stamp = stamp
        self._include_usage = include_usage
        self._ids = _CallIds(stamp)
        self._started: set[int] = set()  # candidates whose first chunk (with the role) went out
        self._called: set[int] = set()  # candidates that called a function
        self._usage: Usage | None = None
        self._finished = False

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        chunks: list[ChatCompletionChunk] = []
        for event in self._sse.feed(data):
            response = _response(event.data)
            if response.usage_metadata:
                self._usage = response.usage_metadata.usage()  # running totals: the last one counts
            chunks.extend(c for candidate in response.candidates if (c := self._chunk(candidate)))
        return chunks

    def close(self) -> list[ChatCompletionChunk]:
        if not self._finished:
            raise UpstreamBadResponse(f"{API} stream ended before a finishReason")
        return (
            [usage_chunk(self._stamp, self._usage)] if self._include_usage and self._usage else []
        )

    def _chunk(self, candidate: _Candidate) -> ChatCompletionChunk | None:
        delta: Delta = {}
        if candidate.index not in self._started:
            self._started.add(candidate.index)
            delta["role"] = "assistant"
        if text := candidate.text():
            delta["content"] = text
        if calls := candidate.calls():
            self._called.add(candidate.index)
            first = self._ids.count
            delta["tool_calls"] = [
                tool_call_delta(first + n, self._ids.out(call)) for n, call in enumerate(calls)
            ]
        finish = None
        if candidate.finish_reason:
            self._finished = True
            finish = _finish(candidate, candidate.index in self._called)
        if not delta and finish is None:
            return None
        return chunk(self._stamp, delta, finish, candidate.index)
