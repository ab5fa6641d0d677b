"""The service container: one Redis connection pool and the services built on it, per process."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from fastapi import APIRouter
from redis.exceptions import RedisError
from starlette.types import ASGIApp

from auction.accounts import Accounts
from auction.bidder_hub import BidderHub
from auction.book import Book
from auction.broker import build_broker
from auction.catalogue import load_catalogue
from auction.commands import Runner
from auction.feed_hub import FeedHub
from auction.keys import Keys
from auction.ledger import Ledger
from auction.offer_codec import OfferCodec
from auction.operator import Operator
from auction.providers import Providers
from auction.replica import BookReplica
from auction.resp import RespClient
from auction.routes import bidders as bidder_routes
from auction.routes.admin import admin_router
from auction.routes.client import CHAT_PATH, ChatEndpoint, client_router
from auction.routes.feed import feed_router
from auction.settings import Settings
from auction.transport import LeanTransport
from clearing.catalogue import Catalogue

log = logging.getLogger("auction.market")


class Market:
    """Everything one server process holds: settings, catalogue, Redis, and the services.

    Built by create_app(); started and stopped by the app's lifespan. Nothing here is global:
    two apps in one process (as in tests) have two Markets.
    """

    def __init__(self, settings: Settings, catalogue: Catalogue | None = None) -> None:
        if settings.redis_url is None:
            raise ValueError("create_app needs settings.redis_url (the CLI starts embedded Redis)")
        self.settings = settings
        self.catalogue = catalogue or load_catalogue(settings.catalogue, settings.catalogue_mode)
        self.keys = Keys(settings.key_prefix)
        # Room for every request in flight (the default pool refuses a 101st connection).
        self.redis = aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=False,
            health_check_interval=5,
            max_connections=4096,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        # The clients' side (added by the client-API work): shared services, then the broker.
        self.accounts = Accounts(self.redis, self.keys)
        self.providers = Providers(self.redis, self.keys)
        # The bidders' upserts go by the lean client: all of a quote's scripts in one round trip.
        # The replica shares the book's codec: it decodes the offers written here without parsing.
        self.offer_codec = OfferCodec()
        self.book = Book(
            self.redis,
            self.keys,
            runner=Runner(RespClient(settings.redis_url), self.redis),
            codec=self.offer_codec,
        )
        self.ledger = Ledger(self.redis, self.keys)
        self.replica = BookReplica(
            self.redis, self.keys, list(self.catalogue), codec=self.offer_codec
        )
        # One pool of HTTP connections per process for every provider call; timeouts are per
        # request (the forwarder's).
        self.http = LeanTransport()
        self.broker = build_broker(self)
        self.operator = Operator(self.redis, self.keys, self.accounts, self.providers, self.book)
        # The providers' and the watchers' sides: bidder sessions (and control notices), the feed.
        self.feed_hub = FeedHub(self.redis, self.keys, self.replica, list(self.catalogue))
        self.bidder_hub = BidderHub(self.redis, self.keys, on_key_revoked=self.feed_hub.drop_key)

    async def start(self) -> None:
        """Connect and start background work (book replica, expiry sweep, listeners)."""
        await self.replica.start()
        self._tasks.append(asyncio.create_task(self._sweep(), name="book-sweep"))
        await self.broker.start()
        await self.bidder_hub.start()
        await self.feed_hub.start()
        self.started = True

    async def _sweep(self, interval_s: float = 1.0) -> None:
        """Expire offers and reservations of the models that have offers (see `sweep_forever`)."""
        while True:
            try:
                await self.book.expire(self.replica.index.models())
            except RedisError:
                log.warning("book sweep failed; retrying in %.1f s", interval_s, exc_info=True)
            await asyncio.sleep(interval_s)

    async def stop(self) -> None:
        """Stop background work and close connections."""
        await self.feed_hub.stop()
        await self.bidder_hub.stop()
        await self.broker.stop()
        await self.replica.stop()
        await self.http.aclose()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self.book.aclose()
        await self.redis.aclose()

    async def readiness(self) -> list[str]:
        """What keeps this process from serving; empty when ready."""
        problems: list[str] = []
        try:
            await self.redis.ping()
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}")
        return problems

    def fast_routes(self) -> dict[tuple[str, str], ASGIApp]:
        """The raw ASGI endpoints of the hottest paths (see `auction.app.MarketApp`)."""
        return {("POST", CHAT_PATH): ChatEndpoint(self.broker)}

    def routers(self) -> list[APIRouter]:
        """The API routers this market serves."""
        return [
            client_router(self.broker),
            admin_router(self.operator, self.settings.admin_token),
            bidder_routes.router,
            feed_router(self.feed_hub, self.accounts.authenticate),
        ]
