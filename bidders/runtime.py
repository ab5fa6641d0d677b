"""The bidder runtime: a WebSocket client keeping one provider's offers live on the marketplace."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bidders.events import (
    Acked,
    BidderEvent,
    Connected,
    Disconnected,
    ErrorReceived,
    Filled,
    Rejected,
)
from bidders.messages import (
    CLOSE_WRONG_PROVIDER,
    Message,
    OfferError,
    heartbeat_message,
    hello_message,
    parse_fill,
    quote_message,
)
from bidders.pricing import Prices, PricingStrategy
from clearing.money import MoneyError, format_price, parse_price

if TYPE_CHECKING:
    from bidders.config import BidderConfig

logger = logging.getLogger(__name__)

QUOTE_CHUNK = 200  # offers per quote message, to stay well under the server's message limit
FATAL_ERRORS = frozenset({"wrong_provider", "unsupported_protocol"})
STOP_GRACE_S = 2.0  # how long stop() waits for a clean close before cancelling


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BidderRefused(Exception):
    """The marketplace refused this bidder for good: retrying cannot help.

    A bad token (HTTP 401 or 403 at the upgrade), a hello for a provider the token does not
    quote for (error wrong_provider, close 4003), or an unsupported protocol.
    """


class BidderGaveUp(ConnectionError):
    """`max_failures` connections in a row failed."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential with full jitter, uniform in [0, min(cap, base × 2^n)]."""

    base_ms: int = 500
    cap_ms: int = 30_000

    def delay_ms(self, attempt: int, rng: random.Random) -> int:
        return rng.randint(0, min(self.cap_ms, self.base_ms << min(attempt, 40)))


@dataclass(frozen=True, slots=True)
class BidderOptions:
    agent: str = "llm-auction-bidder/0.1"
    reprice_ms: int = 1_000  # how often the strategies are asked for new prices
    backoff: Backoff = Backoff()
    open_timeout_ms: int = 10_000  # connect, upgrade and welcome
    max_failures: int | None = None  # failed connections in a row before run() gives up


@dataclass(frozen=True, slots=True)
class OfferPlan:
    """One offer the bidder keeps live: its OFFER fields except the prices, and who sets those."""

    offer_id: str
    fields: Mapping[str, object]
    strategy: PricingStrategy

    def offer(self, prices: Prices) -> Message:
        """The OFFER object at these prices (a fixed cached price never exceeds the input)."""
        body: Message = {"offer_id": self.offer_id, **self.fields}
        body["input_usd_per_mtok"] = format_price(prices[0])
        body["output_usd_per_mtok"] = format_price(prices[1])
        cached = self.fields.get("cached_input_usd_per_mtok")
        if cached is not None:
            try:
                body["cached_input_usd_per_mtok"] = format_price(
                    min(parse_price(cached), prices[0])
                )
            except MoneyError:
                pass  # sent as written: the marketplace's reject says what is wrong
        return body


class Bidder:
    """Connects, says hello, quotes every offer, heartbeats, re-quotes on price moves, reconnects.

    Each connection is a new session: seq restarts at 1 and the whole state is quoted again,
    because the marketplace cancelled the old session's offers when it closed.
    """

    def __init__(
        self,
        url: str,
        token: str,
        provider: str,
        plans: Sequence[OfferPlan],
        *,
        options: BidderOptions = BidderOptions(),
        on_event: Callable[[BidderEvent], None] | None = None,
        clock: Callable[[], int] = wall_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.url, self.provider, self.options = url, provider, options
        self._token = token
        self._plans = {plan.offer_id: plan for plan in plans}
        self._on_event = on_event
        self._clock = clock
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._welcomed = False
        self._seq = 0
        self._sent: dict[str, Prices] = {}
        self.session: str | None = None

    def stop(self) -> None:
        """Ask `run()` to close the connection (normal closure) and return."""
        self._stopping.set()

    def report_load(self, offer_id: str, in_flight: int, capacity: int) -> None:
        """Tell an offer's strategy the provider's measured load; prices are checked at once."""
        plan = self._plans.get(offer_id)
        if plan is not None:
            plan.strategy.on_load(in_flight, capacity, self._clock())
            self._wake.set()

    async def run(self) -> None:
        """Keep the offers live until `stop()`.

        Raises:
            BidderRefused: the marketplace refused the token or the provider.
            BidderGaveUp: `options.max_failures` connections in a row failed.
        """
        failures = 0
        while not self._stopping.is_set():
            reason = await self._until_stopped()
            failures = 0 if self._welcomed else failures + 1
            if self._stopping.is_set():
                self._emit(Disconnected(reason, None))
                break
            limit = self.options.max_failures
            if limit is not None and failures >= limit:
                raise BidderGaveUp(f"{failures} connections in a row failed; last: {reason}")
            delay_ms = self.options.backoff.delay_ms(failures, self._rng)
            self._emit(Disconnected(reason, delay_ms))
            try:
                await asyncio.wait_for(self._stopping.wait(), delay_ms / 1000)
            except TimeoutError:
                pass

    async def _until_stopped(self) -> str:
        """Run one connection; on stop(), let it close cleanly for a moment, then cancel it."""
        task = asyncio.ensure_future(self._connection())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=STOP_GRACE_S)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
        return "stopped" if task.cancelled() else task.result()

    async def _connection(self) -> str:
        """One connection from the upgrade to the close; returns why it ended."""
        self._welcomed = False
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with connect(
                self.url,
                additional_headers=headers,
                user_agent_header=self.options.agent,
                open_timeout=self.options.open_timeout_ms / 1000,
            ) as ws:
                heartbeat_ms = await self._handshake(ws)
                await self._serve(ws, heartbeat_ms)
                reason = f"closed with code {ws.close_code}"
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise BidderRefused(f"the marketplace refused the token (HTTP {status})") from None
            return f"upgrade refused with HTTP {status}"
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_WRONG_PROVIDER:
                raise BidderRefused(f"closed by the marketplace: {exc.rcvd.reason}") from None
            return f"connection closed: {exc}"
        except (OSError, TimeoutError, WebSocketException) as exc:
            return f"connection failed: {exc!r}"
        return reason

    async def _handshake(self, ws: ClientConnection) -> int:
        """Send hello and wait for the welcome; returns its heartbeat_ms."""
        await ws.send(json.dumps(hello_message(self.provider, self.options.agent)))
        async with asyncio.timeout(self.options.open_timeout_ms / 1000):
            while True:
                message = _decode(await ws.recv())
                session, heartbeat_ms = message.get("session"), _int(message.get("heartbeat_ms"))
                if message.get("type") != "welcome":
                    self._dispatch(message)
                elif isinstance(session, str) and heartbeat_ms > 0:
                    self.session, self._welcomed = session, True
                    self._emit(Connected(session, heartbeat_ms))
                    return heartbeat_ms

    async def _serve(self, ws: ClientConnection, heartbeat_ms: int) -> None:
        """Quote the whole state, then read, heartbeat and re-quote until the socket or stop()."""
        self._seq, self._sent = 0, {}
        now = self._clock()
        await self._quote(ws, [(p, p.strategy.prices(now)) for p in self._plans.values()])
        tasks = [
            asyncio.ensure_future(self._read(ws)),
            asyncio.ensure_future(self._beat(ws, heartbeat_ms)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, ConnectionClosed):
                raise error
        await ws.close()
        if ws.close_code == CLOSE_WRONG_PROVIDER:
            raise BidderRefused(f"closed by the marketplace: {ws.close_reason}")

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self._dispatch(_decode(raw))

    async def _beat(self, ws: ClientConnection, heartbeat_ms: int) -> None:
        """Heartbeat every heartbeat_ms; re-quote the offers whose prices moved."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + heartbeat_ms / 1000
        tick = min(self.options.reprice_ms, heartbeat_ms) / 1000
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), min(tick, next_beat - loop.time()))
            except TimeoutError:
                pass
            self._wake.clear()
            now = self._clock()
            moved = [(p, p.strategy.prices(now)) for p in self._plans.values()]
            await self._quote(ws, [(p, pr) for p, pr in moved if self._sent.get(p.offer_id) != pr])
            if loop.time() >= next_beat:
                await ws.send(json.dumps(heartbeat_message()))
                next_beat = loop.time() + heartbeat_ms / 1000

    async def _quote(self, ws: ClientConnection, priced: list[tuple[OfferPlan, Prices]]) -> None:
        for start in range(0, len(priced), QUOTE_CHUNK):
            chunk = priced[start : start + QUOTE_CHUNK]
            self._seq += 1
            await ws.send(json.dumps(quote_message(self._seq, [p.offer(pr) for p, pr in chunk])))
            self._sent.update((p.offer_id, pr) for p, pr in chunk)

    def _dispatch(self, message: Mapping[str, object]) -> None:
        handler = _HANDLERS.get(str(message.get("type")))
        if handler is not None:
            handler(self, message)

    def _on_ack(self, message: Mapping[str, object]) -> None:
        self._emit(Acked(_int(message.get("seq"))))

    def _on_reject(self, message: Mapping[str, object]) -> None:
        raw = message.get("errors")
        errors = tuple(
            OfferError(_str_or_none(e.get("offer_id")), str(e.get("message", "")))
            for e in (raw if isinstance(raw, list) else [])
            if isinstance(e, dict)
        )
        logger.warning("quote %s rejected in part: %s", message.get("seq"), errors)
        self._emit(Rejected(_int(message.get("seq")), errors))

    def _on_fill(self, message: Mapping[str, object]) -> None:
        try:
            fill = parse_fill(message)
        except ValueError as exc:
            logger.warning("ignoring a malformed fill: %s", exc)
            return
        plan = self._plans.get(fill.offer_id)
        if plan is not None:
            plan.strategy.on_fill(fill, self._clock())
            self._wake.set()
        self._emit(Filled(fill))

    def _on_error(self, message: Mapping[str, object]) -> None:
        code, text = str(message.get("code")), str(message.get("message"))
        logger.warning("marketplace error %s: %s", code, text)
        self._emit(ErrorReceived(code, text))
        if code in FATAL_ERRORS:
            raise BidderRefused(f"{code}: {text}")

    def _emit(self, event: BidderEvent) -> None:
        level = logging.INFO if isinstance(event, Connected | Disconnected) else logging.DEBUG
        logger.log(level, "%s: %s", self.provider, event)
        if self._on_event is not None:
            self._on_event(event)


_HANDLERS: dict[str, Callable[[Bidder, Mapping[str, object]], None]] = {
    "ack": Bidder._on_ack,
    "reject": Bidder._on_reject,
    "fill": Bidder._on_fill,
    "error": Bidder._on_error,
}


def _decode(raw: str | bytes) -> Mapping[str, object]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def build_bidder(
    config: BidderConfig, on_event: Callable[[BidderEvent], None] | None = None
) -> Bidder:
    """A `Bidder` for a loaded config (see `bidders.config.load_bidder_config`)."""
    return Bidder(
        config.url,
        config.token.get_secret_value(),
        config.provider,
        config.plans(),
        options=config.options(),
        on_event=on_event,
    )


async def run_bidder(
    config: BidderConfig, on_event: Callable[[BidderEvent], None] | None = None
) -> None:
    """Run a bidder from a loaded config until it is cancelled.

    Raises:
        BidderRefused: the marketplace refused the token or the provider.
    """
    await build_bidder(config, on_event).run()
