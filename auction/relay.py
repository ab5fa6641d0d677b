"""Relaying a provider's stream to the client as server-sent events, then settling it.

The chunks before the one that carries a `finish_reason` go out as they arrive. From that one
on, chunks are held until the provider's stream ends, because the last of them must carry the
`auction` object with the cost, and the cost is known only once usage arrives. Errors after the
first byte end the stream with an OpenAI-shaped error event and `[DONE]`; a client that goes
away is settled for what was streamed. Every way out gives the capacity and hold back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from auction.answers import auction_object, chunk_texts, estimated_usage
from auction.errors import UpstreamFailed
from auction.forward import Opened, provider_error
from auction.orders import Order
from auction.settlement import Ticket
from bidders import wirejson
from bidders.completion import ChatCompletionChunk
from bidders.errors import ProviderError, UpstreamTimeout
from clearing.money import Nanos
from clearing.types import Usage

DONE = b"data: [DONE]\n\n"


def sse(value: object) -> bytes:
    return b"data: " + wirejson.dumps(value) + b"\n\n"


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a stream ended, for settlement and passive health."""

    usage: Usage
    ok: bool
    client_closed: bool
    ttft_ms: int
    output_tokens_per_s: float | None
    error: str | None = None


# Starts the settlement and returns the cost; synchronous, so that no cancellation (a client
# that left) can come between the end of a stream and its settlement.
Settle = Callable[[Order, Ticket, StreamEnd], Nanos]


@dataclass(slots=True)
class _Held:
    """What the relay keeps: the final chunks, and the generated text for estimates."""

    final: list[ChatCompletionChunk] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def take_all(self, chunks: list[ChatCompletionChunk]) -> bytes:
        """The SSE bytes to send now for `chunks`; the final ones are kept back."""
        out = []
        for chunk in chunks:
            self.texts.extend(chunk_texts(chunk))
            choices = chunk.get("choices") or []
            if self.final or not choices or any(c.get("finish_reason") for c in choices):
                self.final.append(chunk)
            else:
                out.append(sse(chunk))
        return b"".join(out)


class Relay:
    """One stream from an opened provider stream to the client."""

    def __init__(
        self,
        order: Order,
        ticket: Ticket,
        opened: Opened,
        settle: Settle,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._order = order
        self._ticket = ticket
        self._opened = opened
        self._settle = settle
        self._clock = clock
        self._held = _Held()

    async def events(self) -> AsyncIterator[bytes]:
        """The SSE body; settles exactly once however it ends; the last piece ends in DONE.

        What is read goes out before the relay would wait for more: one write per wait for
        the provider, not one per chunk or piece (a stream that arrived whole is one write).
        """
        held, failure, ready = self._held, None, self._opened.response.ready
        data = b""
        try:
            data = held.take_all(self._opened.first)
            if data and not ready():
                yield data
                data = b""
            async for chunks in self._rest():
                data += held.take_all(chunks)
                if data and not ready():
                    yield data
                    data = b""
        except (ProviderError, TimeoutError) as exc:
            failure = exc.message if isinstance(exc, ProviderError) else "the stream timed out"
        except BaseException:  # the client went away: cancelled, or the body closed early
            self._close(client_closed=True, error=None)
            raise
        cost, end = self._close(client_closed=False, error=failure)
        if failure is not None:
            error = UpstreamFailed(f"the provider failed during the stream: {failure}")
            yield data + sse(error.body()) + DONE
            return
        yield data + b"".join(sse(chunk) for chunk in self._final_chunks(cost, end)) + DONE

    async def _rest(self) -> AsyncIterator[list[ChatCompletionChunk]]:
        """The chunks after the first, per piece read, within the request's deadline."""
        opened, body = self._opened, self._opened.body
        while True:
            left = self._order.deadline - self._clock()
            if left <= 0:
                raise UpstreamTimeout("the request's timeout_ms passed during the stream")
            try:
                async with asyncio.timeout(left):
                    data = await anext(body)
            except StopAsyncIteration:
                yield opened.decoder.close()
                return
            except httpx.HTTPError as exc:
                raise provider_error(exc) from None
            yield opened.decoder.feed(data)

    def _final_chunks(self, cost: Nanos, end: StreamEnd) -> list[ChatCompletionChunk]:
        final = self._held.final
        if not final:  # the provider never said why it stopped: the auction rides alone
            first = self._opened.first[0]
            final.append(
                {
                    "id": first["id"],
                    "object": "chat.completion.chunk",
                    "created": first["created"],
                    "model": first["model"],
                    "choices": [],
                }
            )
        order = self._order
        obj = auction_object(
            order.clearing_id,
            self._ticket,
            order.clearing.price_rule,
            cost,
            end.usage,
            len(order.record.attempts),
        )
        final[-1]["auction"] = obj  # type: ignore[typeddict-unknown-key]  # our extension field
        return final

    def _close(self, *, client_closed: bool, error: str | None) -> tuple[Nanos, StreamEnd]:
        """Close the provider's stream and start the settlement: no await, so a client's
        cancellation cannot land between them (nor need a shielded task to be kept out)."""
        end = self._measure(client_closed, error)
        self._opened.response.close()
        return self._settle(self._order, self._ticket, end), end

    def _measure(self, client_closed: bool, error: str | None) -> StreamEnd:
        opened, now = self._opened, self._clock()
        usage = opened.decoder.usage
        if usage is None:
            usage = estimated_usage(
                self._order.position.requirements.input_tokens, self._held.texts
            )
        elapsed = now - opened.first_at
        speed = usage.output_tokens / elapsed if usage.output_tokens > 1 and elapsed > 0 else None
        ttft = int((opened.first_at - opened.started) * 1000)
        ok = not client_closed and error is None
        return StreamEnd(usage, ok, client_closed, ttft, speed, error)
