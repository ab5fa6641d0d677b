"""The service container: one Redis connection pool and the services built on it, per process."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from fastapi import APIRouter

from auction.catalogue import load_catalogue
from auction.keys import Keys
from auction.settings import Settings
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
        self.redis = aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=False,
            health_check_interval=5,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    async def start(self) -> None:
        """Connect and start background work (book replica, expiry sweep, listeners)."""
        self.started = True

    async def stop(self) -> None:
        """Stop background work and close connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self.redis.aclose()

    async def readiness(self) -> list[str]:
        """What keeps this process from serving; empty when ready."""
        problems: list[str] = []
        try:
            await self.redis.ping()
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}")
        return problems

    def routers(self) -> list[APIRouter]:
        """The API routers this market serves."""
        return []
