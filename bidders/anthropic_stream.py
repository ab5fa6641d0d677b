"""Anthropic Messages event streams, decoded into OpenAI chat completion chunks."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from bidders.anthropic_answer import API, AnthropicUsage, ContentBlock, finish_reason
from bidders.completion import ChatCompletionChunk, Stamp, ToolCallDelta, chunk, usage_chunk
from bidders.errors import UpstreamBadResponse
from bidders.protocol import load_json, provider_error, shape_error
from bidders.sse import SseParser
from clearing.types import Usage

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


class _Delta(BaseModel):
    type: str = ""
    text: str = ""
    partial_json: str = ""
    stop_reason: str | None = None


class _Error(BaseModel):
    type: str = "api_error"
    message: str = "(no message)"


class _Start(BaseModel):
    usage: AnthropicUsage | None = None


class _Event(BaseModel):
    """Any stream event; which fields it has depends on `type`."""

    type: str
    index: int = 0
    message: _Start | None = None  # message_start
    content_block: ContentBlock | None = None  # content_block_start
    delta: _Delta | None = None  # content_block_delta, message_delta
    usage: AnthropicUsage | None = None  # message_delta
    error: _Error | None = None  # error


class AnthropicStream:
    """Anthropic's stream events as OpenAI chunks; `message_stop` ends the stream."""

    def __init__(self, stamp: Stamp, *, include_usage: bool) -> None:
        self._sse = SseParser()
        self._stamp = stamp
        self._include_usage = include_usage
        self._blocks: dict[int, int | str] = {}  # block index: its tool call's index, or its type
        self._tool_calls = 0
        self._usage: AnthropicUsage | None = None
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
                return [chunk(self._stamp, {}, finish_reason(stop, self._tool_calls > 0))]
            case "message_stop":
                self._done = True
                usage = self.usage
                return [usage_chunk(self._stamp, usage)] if self._include_usage and usage else []
            case "error":
                error = event.error or _Error()
                raise provider_error(API, _ERROR_STATUS.get(error.type, 500), error.message)
        return []  # ping, content_block_stop, and event types this code does not know

    def _start(self, index: int, block: ContentBlock | None) -> list[ChatCompletionChunk]:
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

    def _add_usage(self, usage: AnthropicUsage | None) -> None:
        # message_start has the prompt's counts; message_delta's counts are totals that replace them
        if usage is not None:
            update = usage.model_dump(exclude_none=True)
            self._usage = self._usage.model_copy(update=update) if self._usage else usage
