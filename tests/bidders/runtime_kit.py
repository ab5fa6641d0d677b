"""A tiny real WebSocket marketplace on 127.0.0.1 and helpers to run a Bidder against it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from bidders.events import BidderEvent
from bidders.pricing import PricingStrategy, StaticPrices
from bidders.runtime import Backoff, Bidder, BidderOptions, OfferPlan, wall_ms
from bidders.session import BidderSession, Close, Send, SessionLimits, Upsert
from clearing.catalogue import parse_catalogue
from clearing.money import PriceMicros
from clearing.types import Offer

P = PriceMicros
TOKEN = "bt_test_token"
HOUR = 3_600_000
CATALOGUE = parse_catalogue(
    [
        {
            "id": "gpt-4o",
            "quality": 85,
            "context_window": 128000,
            "max_output_tokens": 16384,
            "features": ["tools", "vision", "json_mode", "streaming"],
        }
    ]
)
FAST = BidderOptions(
    agent="test-bidder/1",
    reprice_ms=20,
    backoff=Backoff(base_ms=10, cap_ms=40),
    open_timeout_ms=2_000,
)


@dataclass
class Market:
    """A marketplace reduced to the bidder route: token check, the real session, a list book."""

    heartbeat_ms: int = 60
    provider: str = "acme"
    frames: list[list[dict[str, object]]] = field(default_factory=list)  # per connection
    book: dict[str, Offer] = field(default_factory=dict)
    close_codes: list[int | None] = field(default_factory=list)
    sockets: list[ServerConnection] = field(default_factory=list)
    on_frame: Callable[[ServerConnection, dict[str, object]], None] | None = None

    def check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad bidder token\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        index = len(self.frames)
        self.frames.append([])
        self.sockets.append(ws)
        limits = SessionLimits(heartbeat_ms=self.heartbeat_ms)
        session = BidderSession(self.provider, CATALOGUE, limits, f"s{index}", now_ms=0)
        try:
            async for raw in ws:
                self.frames[index].append(json.loads(raw))
                for action in session.receive(raw, now_ms=0):
                    await self._perform(ws, action)
        finally:
            session.connection_lost()
            self.close_codes.append(ws.close_code)

    async def _perform(self, ws: ServerConnection, action: object) -> None:
        if isinstance(action, Send):
            await ws.send(action.text)
        elif isinstance(action, Close):
            await ws.close(action.code, action.reason)
        elif isinstance(action, Upsert):
            self.book.update({o.offer_id: o for o in action.offers})

    def of_type(self, connection: int, kind: str) -> list[dict[str, object]]:
        if connection >= len(self.frames):
            return []
        return [f for f in self.frames[connection] if f.get("type") == kind]


async def start(market: Market, port: int = 0) -> Server:
    return await serve(market.handle, "127.0.0.1", port, process_request=market.check_token)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def plan(offer_id: str, strategy: PricingStrategy | None = None, **fields: object) -> OfferPlan:
    body = {"model": "gpt-4o", "capacity": {"concurrency": 4}, **fields}
    return OfferPlan(offer_id, body, strategy or StaticPrices(P(590_000), P(790_000)))


def make_bidder(
    url: str,
    plans: list[OfferPlan],
    events: list[BidderEvent],
    *,
    token: str = TOKEN,
    provider: str = "acme",
    options: BidderOptions = FAST,
    clock: Callable[[], int] = wall_ms,
) -> Bidder:
    return Bidder(
        url,
        token,
        provider,
        plans,
        options=options,
        on_event=events.append,
        clock=clock,
        rng=random.Random(1),
    )
