"""Calling providers: the one pooled HTTP client, the time each attempt gets, and failover.

Candidates are tried cheapest first. An attempt that fails before the first byte reaches the
client (connection error, timeout, HTTP 429 or 5xx, a malformed or empty answer, or a 401/403/404
that says the provider is misconfigured) gives its capacity back, counts against the offer's
passive health, and the next candidate is tried, within the request's deadline. Each attempt
gets what is left of the deadline, except that while fallbacks remain it gets at most half of
it, so that one hung provider cannot use up the time the others need. Any other 4xx is the
request's own fault: it goes back to the client as 400 and nothing is charged.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from auction.errors import (
    BudgetExceeded,
    InvalidRequest,
    NoQualifyingOffer,
    NotFound,
    UpstreamFailed,
)
from auction.health import Health
from auction.orders import Order
from auction.providers import Providers
from auction.records import Attempt, AttemptOutcome
from auction.settings import Settings
from auction.settlement import Clearinghouse, Ticket
from auction.transport import Exchange, LeanTransport
from auction.ttlcache import TtlCache
from bidders.completion import ChatCompletionChunk, ChatResult, Stamp
from bidders.errors import (
    ProviderError,
    UpstreamBadResponse,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bidders.protocol import Adapter, HttpCall, HttpReply, StreamDecoder, Upstream, is_success
from bidders.registry import APIS
from clearing.types import ApiName, Candidate

T = TypeVar("T")
ROUTE_TTL_S = 1.0  # a changed credential or removed provider is seen within this
PROVIDER_FAULT_STATUSES = frozenset({401, 403, 404})  # the provider's setup, not the request


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach a provider: its API and registration."""

    api: ApiName
    base_url: str
    api_key: str | None


class Routes:
    """Provider registrations for the forwarder, cached for a second per process."""

    def __init__(self, providers: Providers, clock: Callable[[], float] = time.monotonic) -> None:
        self._providers = providers
        self._cache: TtlCache[str, Route] = TtlCache(ROUTE_TTL_S, clock=clock)

    async def get(self, provider: str) -> Route:
        """Raises NotFound when the provider is not (or no longer) registered."""
        return await self._cache.get(provider, lambda: self._load(provider))

    async def _load(self, provider: str) -> Route:
        record, (base_url, api_key) = await asyncio.gather(
            self._providers.get(provider), self._providers.credentials(provider)
        )
        if record is None:
            raise NotFound(f"no provider named {provider!r}")
        return Route(record.api, base_url, api_key)


@dataclass(slots=True)
class Opened:
    """A provider stream whose first chunks arrived; the rest is read by `auction.relay`."""

    response: Exchange
    body: AsyncIterator[bytes]
    decoder: StreamDecoder
    first: list[ChatCompletionChunk]
    started: float  # monotonic: when the attempt began
    first_at: float  # monotonic: when the first chunks arrived


def outcome_of(exc: BaseException) -> AttemptOutcome:
    """An attempt's outcome from the error that ended it."""
    if isinstance(exc, UpstreamTimeout | TimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamRateLimited):
        return "rate_limited"
    if isinstance(exc, UpstreamBadResponse):
        return "bad_response"
    if isinstance(exc, UpstreamRejected):
        return "rejected"
    return "unavailable"


def provider_error(exc: Exception) -> ProviderError:
    """An httpx error typed as a provider failure."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"provider timed out: {type(exc).__name__}")
    return UpstreamUnavailable(f"provider unreachable: {type(exc).__name__}: {exc}")


def provider_at_fault(exc: ProviderError | TimeoutError) -> bool:
    """Whether a failure counts against the offer's health (and allows failover)."""
    if isinstance(exc, UpstreamRejected):
        return exc.status in PROVIDER_FAULT_STATUSES
    return True


class Forwarder:
    """Sends a cleared order to its candidates in turn (see the module docstring)."""

    def __init__(
        self,
        http: LeanTransport,
        routes: Routes,
        house: Clearinghouse,
        health: Health,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        adapters: Mapping[ApiName, Adapter] = APIS,
    ) -> None:
        self._http = http
        self._routes = routes
        self._house = house
        self._health = health
        self._settings = settings
        self._clock = clock
        self._wall_ms = wall_ms
        self._adapters = adapters
        self._cleanup: set[asyncio.Future[Any]] = set()
        self._urls: dict[str, httpx.URL] = {}

    async def complete(self, order: Order) -> tuple[Ticket, ChatResult]:
        """A whole answer from the first candidate that gives one.

        Raises:
            BudgetExceeded, InvalidRequest, UpstreamFailed: see `_failover`.
        """
        return await self._failover(order, self._call)

    async def open_stream(self, order: Order) -> tuple[Ticket, Opened]:
        """A stream from the first candidate whose first chunks arrive in time."""
        return await self._failover(order, self._open)

    async def finish(self, work: Awaitable[T]) -> T:
        """Run clean-up to its end even if the caller is being cancelled (client gone)."""
        task = asyncio.ensure_future(work)
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)
        return await asyncio.shield(task)

    async def _failover(
        self, order: Order, attempt: Callable[[Order, Candidate, Route], Awaitable[T]]
    ) -> tuple[Ticket, T]:
        """Try the candidates in turn; the hold is given back unless a ticket is returned.

        Raises:
            BudgetExceeded: the winner's worst case does not fit the key's budget.
            InvalidRequest: the provider rejected the request as malformed.
            NoQualifyingOffer: no provider was called: every candidate was gone, repriced or
                full by the time it was reserved.
            UpstreamFailed: the candidates called all failed, or no time was left.
        """
        candidates = order.clearing.ranked[: self._settings.failover_depth]
        called = False
        try:
            for n, cand in enumerate(candidates):
                left = order.deadline - self._clock()
                if left <= 0:
                    break
                ttl_ms = int(left * 1000) + self._settings.reservation_grace_ms
                started = self._clock()
                try:
                    took = await self._house.take(order.position, cand, n, ttl_ms)
                except BudgetExceeded:
                    if not called:
                        raise
                    self._note(order, cand, "over_budget", started)
                    continue
                if isinstance(took, str):
                    self._note(order, cand, took, started)
                    continue
                called = True
                last = n == len(candidates) - 1
                try:
                    route = await self._routes.get(cand.offer.provider)
                    async with asyncio.timeout(left if last else left / 2):
                        result = await attempt(order, cand, route)
                except (ProviderError, TimeoutError, NotFound) as exc:
                    await self._failed(order, cand, took, exc, started)
                    continue
                except BaseException:
                    await self.finish(self._house.give_back(took))
                    raise
                self._note(order, cand, "ok", started)
                return took, result
        except BaseException:
            await self.finish(self._house.release(order.position))
            raise
        await self._house.release(order.position)
        if not called and order.record.attempts:  # every offer went (or filled up) meanwhile
            raise NoQualifyingOffer(
                "the qualifying offers were taken or withdrawn before they could be reserved",
                details=dict(Counter(a.outcome for a in order.record.attempts)),
                headers={"x-auction-clearing-id": order.clearing_id},
            )
        raise UpstreamFailed(
            f"every qualifying offer was tried and failed ({_summary(order)})",
            headers={"x-auction-clearing-id": order.clearing_id},
        )

    async def _failed(
        self,
        order: Order,
        cand: Candidate,
        ticket: Ticket,
        exc: ProviderError | TimeoutError | NotFound,
        t0: float,
    ) -> None:
        """Give the attempt's capacity back, note it, and count it against the offer's health.

        Raises:
            InvalidRequest: the provider rejected the request itself (no failover).
        """
        if isinstance(exc, NotFound):
            self._note(order, cand, "gone", t0, message=exc.message)
            await self._house.give_back(ticket)
            return
        status = exc.status if isinstance(exc, ProviderError) else None
        message = exc.message if isinstance(exc, ProviderError) else "no answer in time"
        self._note(order, cand, outcome_of(exc), t0, status=status, message=message)
        if not provider_at_fault(exc):
            await self._house.give_back(ticket)
            raise InvalidRequest(
                f"the provider rejected the request: {message}",
                headers={"x-auction-clearing-id": order.clearing_id},
            )
        [reply] = await self._house.give_back(
            ticket, self._health.failure(cand.offer, self._wall_ms())
        )
        self._health.absorb(cand.offer, reply)

    def _note(
        self,
        order: Order,
        cand: Candidate,
        outcome: AttemptOutcome,
        t0: float,
        *,
        status: int | None = None,
        message: str | None = None,
    ) -> None:
        ms = int((self._clock() - t0) * 1000)
        offer = cand.offer
        order.record.attempts.append(
            Attempt(offer.provider, offer.offer_id, outcome, ms, status, message)
        )

    def _url(self, url: str) -> httpx.URL:
        """The parsed URL (parsing costs more than the rest of building a request)."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 4096:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    def _upstream(self, cand: Candidate, route: Route) -> tuple[Adapter, Upstream]:
        offer = cand.offer
        upstream = Upstream(
            route.base_url, route.api_key, offer.upstream_model or offer.model,
            offer.max_output_tokens,
        )  # fmt: skip
        return self._adapters[route.api], upstream

    def stamp(self, order: Order, cand: Candidate) -> Stamp:
        """What the answer is stamped with: its id, time and the catalogue model that served."""
        return Stamp("chatcmpl-" + order.clearing_id.removeprefix("clr_"), order.created,
                     cand.offer.model)  # fmt: skip

    async def _send(self, call: HttpCall) -> Exchange:
        return await self._http.exchange(call.method, self._url(call.url), call.headers, call.body)

    async def _call(self, order: Order, cand: Candidate, route: Route) -> ChatResult:
        adapter, upstream = self._upstream(cand, route)
        call = adapter.build_request(order.chat, upstream, stream=False)
        try:
            resp = await self._http.exchange(
                call.method, self._url(call.url), call.headers, call.body
            )
            content = await resp.read()
        except httpx.HTTPError as exc:
            raise provider_error(exc) from None
        reply = HttpReply(resp.status, resp.headers, content)
        return adapter.parse_response(reply, upstream=upstream, stamp=self.stamp(order, cand))

    async def _open(self, order: Order, cand: Candidate, route: Route) -> Opened:
        adapter, upstream = self._upstream(cand, route)
        call = adapter.build_request(order.chat, upstream, stream=True)
        started = self._clock()
        try:
            resp = await self._http.exchange(
                call.method, self._url(call.url), call.headers, call.body
            )
        except httpx.HTTPError as exc:
            raise provider_error(exc) from None
        try:
            if not is_success(resp.status):
                reply = HttpReply(resp.status, resp.headers, await resp.read())
                raise adapter.parse_error(reply, upstream=upstream)
            decoder = adapter.stream_decoder(
                stamp=self.stamp(order, cand), include_usage=order.chat.include_usage
            )
            body = aiter(resp.body)
            first: list[ChatCompletionChunk] = []
            while not first:
                try:
                    data = await anext(body)
                except StopAsyncIteration:
                    first = decoder.close()
                    if not first:
                        raise UpstreamBadResponse("the provider's stream was empty") from None
                    break
                first = decoder.feed(data)
            return Opened(resp, body, decoder, first, started, self._clock())
        except httpx.HTTPError as exc:
            resp.close()
            raise provider_error(exc) from None
        except BaseException:
            resp.close()
            raise


def _summary(order: Order) -> str:
    attempts = order.record.attempts
    if not attempts:
        return "no time was left"
    return ", ".join(f"{a.provider}/{a.offer_id}: {a.outcome}" for a in attempts)
