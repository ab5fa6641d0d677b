"""The clients' side of the market: a chat request from the key check to the settled answer.

    authenticate (cached ≤ 1 s) → rate limit → parse and derive the requirements → clear
    against this process's replica (health laid over it) → forward with failover, which holds
    the budget and reserves capacity per attempt → settle → answer

Quotes, the model list, accounts and clearing records are read-only views of the same parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.answers import answer_texts, auction_headers, auction_object, estimated_usage
from auction.api_keys import KeyRecord
from auction.auth import KeyCache
from auction.book import Book
from auction.book_commands import RELEASE, RESERVE, SETTLE
from auction.commands import Runner, Script
from auction.errors import MarketError
from auction.feed_trades import TRADE_PUBLISH
from auction.forward import Forwarder, Routes
from auction.health import HEALTH_RECORD, Health
from auction.holds import HOLD, HOLD_RELEASE, HOLD_SETTLE
from auction.keys import Keys
from auction.ledger import LEDGER_APPEND, Ledger
from auction.orders import Order, ParsedRequest, new_clearing_id, parse_request, refuse_unserved
from auction.pending import PendingSettlements
from auction.providers import Providers
from auction.ratelimit import RATE_HIT
from auction.records import ClearingRecord, Records
from auction.relay import Relay, StreamEnd
from auction.replica import BookReplica
from auction.resp import RespClient
from auction.settings import Settings
from auction.settlement import Clearinghouse, Position, Ticket
from auction.transport import LeanTransport
from bidders import wirejson
from bidders.completion import completion_usage
from clearing.catalogue import Catalogue
from clearing.engine import clear
from clearing.money import Nanos, format_usd
from clearing.settle import charge
from clearing.types import Clearing, Usage

log = logging.getLogger(__name__)

# The scripts the request path sends by EVALSHA, as their owners name them: loaded at start
# (one missing here would only cost a NOSCRIPT and a reload on first use).
SCRIPTS: tuple[Script, ...] = (
    RATE_HIT,
    HOLD,
    HOLD_RELEASE,
    HOLD_SETTLE,
    RESERVE,
    RELEASE,
    SETTLE,
    HEALTH_RECORD,
    LEDGER_APPEND,
    TRADE_PUBLISH,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: the JSON body and the headers."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """A stream whose first chunks have arrived: its events and the headers."""

    events: AsyncIterator[bytes]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Parts:
    """What the broker works with; all of them belong to the process's Market."""

    settings: Settings
    catalogue: Catalogue
    accounts: Accounts
    keys: KeyCache
    replica: BookReplica
    health: Health
    house: Clearinghouse
    forwarder: Forwarder
    records: Records


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Broker:
    """Runs client requests through the market (see the module docstring)."""

    def __init__(
        self,
        parts: Parts,
        runner: Runner,
        redis: aioredis.Redis,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parts = parts
        self._runner = runner
        self._redis = redis
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self.pending = PendingSettlements()

    async def start(self) -> None:
        """Load the request path's scripts, and follow the other processes' health records."""
        for each in SCRIPTS:
            await self._redis.script_load(each.source())
        replica = self.parts.replica
        self._tasks.append(
            asyncio.create_task(self.parts.health.run(replica.index.models), name="health")
        )

    async def stop(self) -> None:
        await self.pending.drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._runner.aclose()

    async def authenticate(self, authorization: str | None) -> KeyRecord:
        return await self.parts.keys.authenticate(authorization)

    def clear(self, parsed: ParsedRequest) -> Clearing:
        """Clear against this process's replica, with passive health applied."""
        p = self.parts
        live = p.health.view(p.replica.live, wall_ms())
        return clear(
            p.replica.index,
            live,
            parsed.requirements,
            price_rule=p.settings.price_rule,
            depth=p.settings.failover_depth,
            now_ms=wall_ms(),
        )

    async def prepare(self, key: KeyRecord, body: bytes) -> Order:
        """Rate-limit, parse and clear a chat request.

        Raises:
            RateLimited, InvalidRequest, BudgetExceeded (max_cost_usd), NoQualifyingOffer.
        """
        p = self.parts
        started = self._clock()
        parsed = parse_request(body, p.catalogue, p.settings)
        clearing = self.clear(parsed)
        clearing_id = new_clearing_id()
        record = ClearingRecord(
            clearing_id, key.key_id, wall_ms(), parsed.chat.wants_stream, clearing
        )
        limit = p.settings.rate_limit_per_minute
        if not clearing.ranked:
            await p.house.count(key.key_id, limit)  # counted here; else by the first take
            try:
                refuse_unserved(clearing, clearing_id)
            except MarketError as exc:
                await self._fail(record, exc)
                raise
        return Order(
            key=key,
            parsed=parsed,
            clearing=clearing,
            record=record,
            position=Position(clearing_id, key, parsed.requirements, limit),
            deadline=started + parsed.timeout_ms / 1000,
            created=int(time.time()),
        )

    async def complete(self, order: Order) -> Answer:
        """Forward a non-streaming order; it is settled after the answer (`auction.pending`)."""
        p = self.parts
        try:
            ticket, result = await p.forwarder.complete(order)
        except MarketError as exc:
            await self._fail(order.record, exc)
            raise
        usage = result.usage or estimated_usage(
            order.position.requirements.input_tokens, answer_texts(result.body)
        )
        cost = self._settle(order, ticket, usage, None)
        body = dict(result.body)
        if result.usage is None:
            body["usage"] = completion_usage(usage)
        body["auction"] = auction_object(
            order.clearing_id,
            ticket,
            order.clearing.price_rule,
            cost,
            usage,
            len(order.record.attempts),
        )
        headers = auction_headers(order.clearing_id, ticket)
        headers["x-auction-cost-usd"] = format_usd(cost)
        return Answer(wirejson.dumps(body), headers)

    async def stream(self, order: Order) -> StreamAnswer:
        """Forward a streaming order; the events settle it when they end."""
        p = self.parts
        try:
            ticket, opened = await p.forwarder.open_stream(order)
        except MarketError as exc:
            await self._fail(order.record, exc)
            raise
        relay = Relay(order, ticket, opened, self._settle_stream)
        return StreamAnswer(relay.events(), auction_headers(order.clearing_id, ticket))

    def _settle_stream(self, order: Order, ticket: Ticket, end: StreamEnd) -> Nanos:
        return self._settle(order, ticket, end.usage, end)

    async def settled(self, key_id: str) -> None:
        """Wait for the key's settlements that this process has started."""
        await self.pending.settled(key_id)

    def _settle(self, order: Order, ticket: Ticket, usage: Usage, end: StreamEnd | None) -> Nanos:
        """Start the settlement (budget, capacity, ledger, trade, fill, health, record: one
        round trip, after the answer); returns the cost it charges."""
        p, record, offer = self.parts, order.record, ticket.candidate.offer
        cost = charge(ticket.candidate, usage)
        record.served_by, record.usage, record.cost = ticket.candidate, usage, cost
        if end is not None and end.client_closed:
            record.outcome, health = "client_closed", None
        elif end is not None and end.error is not None:
            record.outcome, record.error = "failed", end.error
            health = p.health.failure(offer, wall_ms())
        else:
            record.outcome = "completed"
            health = p.health.success(
                offer,
                wall_ms(),
                ttft_ms=None if end is None else end.ttft_ms,
                output_tokens_per_s=None if end is None else end.output_tokens_per_s,
            )
        also = [p.records.command(record)] + ([health] if health is not None else [])

        async def settle() -> None:
            _, replies = await p.house.settle(order.position, ticket, usage, cost, also)
            if health is not None:
                p.health.absorb(offer, replies[1])

        self.pending.start(order.key.key_id, order.clearing_id, settle)
        return cost

    async def _fail(self, record: ClearingRecord, exc: MarketError) -> None:
        exc.headers.setdefault("x-auction-clearing-id", record.clearing_id)
        record.outcome = "rejected" if exc.http_status < 500 else "failed"
        record.error = exc.message
        try:
            await self.parts.records.save(record)
        except Exception:  # the client's error matters more than the record
            log.warning("could not save clearing record %s", record.clearing_id, exc_info=True)


class MarketParts(Protocol):
    """What `build_broker` takes from the process's `Market`."""

    settings: Settings
    catalogue: Catalogue
    redis: aioredis.Redis
    keys: Keys
    accounts: Accounts
    providers: Providers
    book: Book
    ledger: Ledger
    replica: BookReplica
    http: LeanTransport


def build_broker(m: MarketParts, *, rng: random.Random | None = None) -> Broker:
    """The broker and its parts, on the market's Redis, book, replica and HTTP client."""
    s = m.settings
    assert s.redis_url is not None
    health = Health(m.redis, m.keys, s, rng=rng)
    runner = Runner(RespClient(s.redis_url), m.redis)
    house = Clearinghouse(runner, m.keys, wall_ms)
    parts = Parts(
        settings=s,
        catalogue=m.catalogue,
        accounts=m.accounts,
        keys=KeyCache(m.accounts),
        replica=m.replica,
        health=health,
        house=house,
        forwarder=Forwarder(m.http, Routes(m.providers), house, health, s),
        records=Records(m.redis, m.keys, s.clearing_record_ttl_s),
    )
    return Broker(parts, runner, m.redis)
