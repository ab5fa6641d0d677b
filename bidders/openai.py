"""OpenAI Chat Completions, spoken by OpenAI and every OpenAI-compatible server: pass-through.

The client's body goes on as sent (unknown fields too) with the upstream model name and without
the `auction` object. Streams always ask for usage, since settlement needs it; whether the
usage reaches the client is the decoder's `include_usage`, the client's own choice.
"""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, ValidationError

from bidders import wirejson
from bidders.chat import ChatRequest
from bidders.completion import ChatCompletion, ChatCompletionChunk, ChatResult, Stamp
from bidders.errors import ProviderError, UpstreamBadResponse, UpstreamUnavailable
from bidders.protocol import (
    HttpCall,
    HttpReply,
    Upstream,
    error_message,
    is_success,
    load_json,
    provider_error,
    retry_after_ms,
    shape_error,
)
from bidders.sse import SseParser
from clearing.types import Usage

API = "openai"


class _Details(BaseModel):
    cached_tokens: int | None = None


class _Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_details: _Details | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek's name for cached prompt tokens

    def usage(self) -> Usage:
        details = self.prompt_tokens_details
        cached = details.cached_tokens if details else None
        return Usage(
            self.prompt_tokens, self.completion_tokens, cached or self.prompt_cache_hit_tokens or 0
        )


class _ToolCall(BaseModel):
    id: str


class _Message(BaseModel):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None

    def said_something(self) -> bool:
        return bool(self.message.content or self.message.tool_calls)


class _Completion(BaseModel):
    choices: list[_Choice]
    usage: _Usage | None = None


class _Chunk(BaseModel):
    choices: list[dict[str, object]]
    usage: _Usage | None = None


class OpenAIAdapter:
    """The adapter for `openai`: OpenAI itself, vLLM, Ollama, llama.cpp, Together, Groq, ..."""

    def build_request(self, req: ChatRequest, upstream: Upstream, *, stream: bool) -> HttpCall:
        body = req.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"auction"})
        body["model"] = upstream.upstream_model
        if stream:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        url = f"{upstream.base_url.rstrip('/')}/chat/completions"
        return HttpCall("POST", url, headers, wirejson.dumps(body))

    def parse_response(self, reply: HttpReply, *, upstream: Upstream, stamp: Stamp) -> ChatResult:
        if not is_success(reply.status):
            raise self.parse_error(reply, upstream=upstream)
        raw = load_json(reply.body, API)
        try:
            parsed = _Completion.model_validate(raw)
        except ValidationError as exc:
            raise shape_error(API, "answer", exc) from None
        if not any(
            c.said_something() or c.finish_reason in ("length", "content_filter")
            for c in parsed.choices
        ):
            raise UpstreamBadResponse(f"{API} answered with no content")
        raw.update(id=stamp.id, object="chat.completion", created=stamp.created, model=stamp.model)
        usage = parsed.usage.usage() if parsed.usage else None
        return ChatResult(cast(ChatCompletion, raw), usage)

    def stream_decoder(self, *, stamp: Stamp, include_usage: bool) -> OpenAIStream:
        return OpenAIStream(stamp, include_usage=include_usage)

    def parse_error(self, reply: HttpReply, *, upstream: Upstream) -> ProviderError:
        message = error_message(reply.body, upstream.api_key)
        return provider_error(API, reply.status, message, retry_after_ms=retry_after_ms(reply))


class OpenAIStream:
    """Passes chunks through with the stamp's id and model; `data: [DONE]` ends the stream."""

    def __init__(self, stamp: Stamp, *, include_usage: bool) -> None:
        self._sse = SseParser()
        self._stamp = stamp
        self._include_usage = include_usage
        self._usage: Usage | None = None
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        chunks = []
        for event in self._sse.feed(data):
            if self._done:
                break
            chunk = self._chunk(event.data)
            if chunk is not None:
                chunks.append(chunk)
        return chunks

    def close(self) -> list[ChatCompletionChunk]:
        if not self._done:
            raise UpstreamBadResponse(f"{API} stream ended before [DONE]")
        return []

    def _chunk(self, data: str) -> ChatCompletionChunk | None:
        if data.strip() == "[DONE]":
            self._done = True
            return None
        raw = load_json(data, API)
        if "error" in raw:  # a failure after the 200 status line, sent as a data event
            message = error_message(data.encode(), None)
            raise UpstreamUnavailable(f"{API} stream failed: {message}")
        choices = raw.get("choices")
        # Content chunks are checked by hand (the model costs more than the rest of the relay);
        # anything else, and any chunk with usage, goes through the model and its errors.
        if raw.get("usage") is not None or not _plain_choices(choices):
            try:
                parsed = _Chunk.model_validate(raw)
            except ValidationError as exc:
                raise shape_error(API, "chunk", exc) from None
            if parsed.usage is not None:
                self._usage = parsed.usage.usage()
            choices = parsed.choices
        raw.update(id=self._stamp.id, created=self._stamp.created, model=self._stamp.model)
        if not self._include_usage:
            raw.pop("usage", None)
            if not choices:
                return None  # the usage-only chunk we asked for on our own account
        return cast(ChatCompletionChunk, raw)


def _plain_choices(choices: object) -> bool:
    """Whether `choices` is what `_Chunk` accepts from JSON: a list of objects."""
    return type(choices) is list and all(type(c) is dict for c in choices)
