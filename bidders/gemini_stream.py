"""Gemini streamGenerateContent event streams, decoded into OpenAI chat completion chunks."""

from __future__ import annotations

from bidders.completion import (
    ChatCompletionChunk,
    Delta,
    Stamp,
    chunk,
    tool_call_delta,
    usage_chunk,
)
from bidders.errors import UpstreamBadResponse
from bidders.gemini_answer import API, CallIds, Candidate, finish_reason, load_response
from bidders.sse import SseParser
from clearing.types import Usage


class GeminiStream:
    """Each event is a whole GenerateContentResponse; the body ends after one with a
    finishReason (Gemini sends no end event of its own)."""

    def __init__(self, stamp: Stamp, *, include_usage: bool) -> None:
        self._sse = SseParser()
        self._stamp = stamp
        self._include_usage = include_usage
        self._ids = CallIds(stamp)
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
            response = load_response(event.data)
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

    def _chunk(self, candidate: Candidate) -> ChatCompletionChunk | None:
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
            finish = finish_reason(candidate, candidate.index in self._called)
        if not delta and finish is None:
            return None
        return chunk(self._stamp, delta, finish, candidate.index)
