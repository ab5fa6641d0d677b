"""The simulated provider's request handler: one vendor's API with pacing, faults and stats."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from bidders.simulated.anthropic_api import AnthropicWire
from bidders.simulated.behaviour import (
    FaultKind,
    FaultPlan,
    PromptCache,
    SimConfig,
    Stats,
    parse_fault,
)
from bidders.simulated.gemini_api import GeminiWire
from bidders.simulated.generation import Prompt, Reply, generate
from bidders.simulated.http_server import HttpRequest, Responder
from bidders.simulated.openai_api import OpenAIWire
from bidders.simulated.wire import ErrorKind, Frame, ReplyMeta, Route, WireApi, WireError, dumps
from clearing.types import ApiName

APIS: dict[ApiName, WireApi] = {
    "openai": OpenAIWire(),
    "anthropic": AnthropicWire(),
    "gemini": GeminiWire(),
}
FAULT_HEADER = "x-sim-fault"
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
ERROR_FAULTS: dict[FaultKind, ErrorKind] = {
    "rate_limit": "rate_limit",
    "server_error": "server_error",
    "overloaded": "overloaded",
}
BROKEN_STREAMS = frozenset({"drop_stream", "stream_error", "malformed_json"})
MALFORMED = Frame(b'data: {"choices": [{"delta": \n\n')


class SimulatedApp:
    """The request handler: control routes under /_sim/, everything else is the vendor's API."""

    def __init__(self, api: ApiName, config: SimConfig) -> None:
        self.wire = APIS[api]
        self.config = config
        self.stats = Stats(capacity=config.capacity)
        self.faults = FaultPlan(config.fault_rate, config.fault_kinds, config.seed)
        self.cache = PromptCache(config.cache_min_tokens)
        self._serial = 0
        self._control: dict[tuple[str, str], Callable[[HttpRequest], object]] = {
            ("GET", "/_sim/stats"): lambda _: self.stats.as_dict(),
            ("GET", "/_sim/faults"): lambda _: self.faults.describe(),
            ("POST", "/_sim/faults"): self._plan_faults,
            ("DELETE", "/_sim/faults"): self._clear_faults,
            ("POST", "/_sim/reset"): self._reset,
        }

    def reconfigure(self, config: SimConfig) -> None:
        """Take new settings; the stats, the planned faults and the cache carry on."""
        self.config = config
        self.stats.capacity = config.capacity
        self.cache.min_tokens = config.cache_min_tokens
        self.faults.set_rate(config.fault_rate, config.fault_kinds, config.seed)

    async def __call__(self, request: HttpRequest, resp: Responder) -> None:
        if request.path.startswith("/_sim/"):
            self._answer_control(request, resp)
            return
        query = dict(parse_qsl(request.query))
        route = self.wire.match(request.method, request.path, query)
        if route is None:
            where = f"Invalid URL ({request.method} {request.path})"
            self._send_error(resp, WireError("not_found", where))
            return
        self.stats.enter()
        try:
            await self._answer(request, query, route, resp)
        finally:
            self.stats.leave()

    async def _answer(
        self, request: HttpRequest, query: Mapping[str, str], route: Route, resp: Responder
    ) -> None:
        try:
            self.wire.check_headers(request.headers, query, self.config.api_key)
            if route.action == "models":
                resp.send(200, JSON, self.wire.models(self.config.models))
                return
            prompt = self.wire.parse(route, _json(request.body))
            if self.config.models and prompt.model not in self.config.models:
                raise WireError("model_not_found", param=prompt.model)
            fault = self.faults.next(_requested_fault(request.headers))
        except WireError as err:
            self._send_error(resp, err)
            return
        if fault is not None:
            self.stats.faults_injected += 1
        if fault in ERROR_FAULTS or (fault == "stream_error" and not prompt.stream):
            self._send_error(resp, WireError(ERROR_FAULTS.get(fault, "server_error")))
        elif fault == "timeout":
            await asyncio.sleep(self.config.max_hang_s)  # cancelled when the client hangs up
            resp.abort()
        elif fault == "disconnect":
            resp.abort()
        else:
            if fault == "slow_first_byte":
                await asyncio.sleep(self.config.slow_first_byte_ms / 1000)
            await self._reply(prompt, fault, resp)

    async def _reply(self, prompt: Prompt, fault: FaultKind | None, resp: Responder) -> None:
        cached, written = self.cache.lookup(prompt)
        empty = fault == "empty_content"
        reply = generate(
            prompt,
            self.config.reply_tokens,
            cached_tokens=cached,
            cache_write_tokens=written,
            empty=empty,
        )
        self._serial += 1
        meta = ReplyMeta(self._serial, int(time.time()))
        if prompt.stream:
            await self._stream(prompt, reply, meta, fault, resp)
        else:
            await self._unary(prompt, reply, meta, fault, resp)
        if fault not in BROKEN_STREAMS:
            self.stats.tokens_in += reply.usage.prompt_tokens
            self.stats.tokens_out += reply.usage.completion_tokens

    async def _unary(
        self,
        prompt: Prompt,
        reply: Reply,
        meta: ReplyMeta,
        fault: FaultKind | None,
        resp: Responder,
    ) -> None:
        tokens = reply.usage.completion_tokens
        await _sleep(self.config.ttft_ms / 1000 + self._spacing() * max(0, tokens - 1))
        body = self.wire.body(prompt, reply, meta)
        headers = JSON + self.wire.headers(meta)
        if fault == "malformed_json":
            body = body[: len(body) // 2]
        if fault == "drop_stream":
            resp.start(200, headers, length=len(body))
            await resp.write(body[: len(body) // 2])
            resp.abort()
            return
        resp.send(200, headers, body)

    async def _stream(
        self,
        prompt: Prompt,
        reply: Reply,
        meta: ReplyMeta,
        fault: FaultKind | None,
        resp: Responder,
    ) -> None:
        frames = self.wire.stream(prompt, reply, meta, self.config.tokens_per_chunk)
        frames = self._break(frames, fault)
        resp.start(200, SSE + self.wire.headers(meta))
        if self.config.ttft_ms or self.config.output_tokens_per_s:
            await self._paced(frames, resp)
        else:
            await resp.write(b"".join(frame.data for frame in frames))
        if fault == "drop_stream":
            resp.abort()
        else:
            resp.end()

    async def _paced(self, frames: list[Frame], resp: Responder) -> None:
        """Token i is due at ttft + i / rate; frames before the first token wait for it."""
        loop = asyncio.get_running_loop()
        first_due = loop.time() + self.config.ttft_ms / 1000
        spacing = self._spacing()
        pending: list[bytes] = []
        emitted, started = 0, False
        for frame in frames:
            if frame.tokens:
                wait = first_due + spacing * (emitted + frame.tokens - 1) - loop.time()
                emitted += frame.tokens
                if wait > 0:
                    if started:  # what is already due goes out before the pause
                        await resp.write(b"".join(pending))
                        pending.clear()
                    await asyncio.sleep(wait)
                started = True
            pending.append(frame.data)
        if not started:
            await _sleep(first_due - loop.time())
        await resp.write(b"".join(pending))

    def _break(self, frames: list[Frame], fault: FaultKind | None) -> list[Frame]:
        """The frames a broken stream sends: cut after half of the tokens, plus what breaks it."""
        if fault not in BROKEN_STREAMS:
            return frames
        token_frames = [i for i, frame in enumerate(frames) if frame.tokens]
        cut = token_frames[len(token_frames) // 2] + 1 if token_frames else 1
        if fault == "stream_error":
            return [*frames[:cut], self.wire.stream_error(WireError("overloaded"))]
        if fault == "malformed_json":
            return [*frames[:cut], MALFORMED, *frames[cut:]]
        return frames[:cut]

    def _spacing(self) -> float:
        rate = self.config.output_tokens_per_s
        return 1 / rate if rate else 0.0

    def _send_error(self, resp: Responder, err: WireError) -> None:
        reply = self.wire.error(err, self.config.retry_after_s)
        resp.send(reply.status, JSON + list(reply.headers), reply.body)

    def _answer_control(self, request: HttpRequest, resp: Responder) -> None:
        action = self._control.get((request.method, request.path))
        if action is None:
            resp.send(404, JSON, dumps({"error": f"no control route {request.path}"}))
            return
        try:
            resp.send(200, JSON, dumps(action(request)))
        except (ValueError, TypeError, KeyError) as exc:
            resp.send(400, JSON, dumps({"error": str(exc)}))

    def _plan_faults(self, request: HttpRequest) -> object:
        """{"kind": K, "count": N} queues faults; {"rate": R, "kinds": [...], "seed": S} draws."""
        order = json.loads(request.body or b"{}")
        if "kind" in order:
            self.faults.add(parse_fault(str(order["kind"])), int(order.get("count", 1)))
        else:
            kinds = tuple(parse_fault(str(k)) for k in order.get("kinds", ["rate_limit"]))
            self.faults.set_rate(float(order["rate"]), kinds, int(order.get("seed", 0)))
        return self.faults.describe()

    def _clear_faults(self, request: HttpRequest) -> object:
        self.faults.clear()
        return self.faults.describe()

    def _reset(self, request: HttpRequest) -> object:
        self.stats.reset()
        self.faults.clear()
        self.cache.clear()
        return self.stats.as_dict()


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise WireError(
            "bad_request", "We could not parse the JSON body of your request."
        ) from None


def _requested_fault(headers: Mapping[str, str]) -> FaultKind | None:
    value = headers.get(FAULT_HEADER)
    if not value:
        return None
    try:
        return parse_fault(value)
    except ValueError as exc:
        raise WireError("bad_request", f"{FAULT_HEADER}: {exc}") from None


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
