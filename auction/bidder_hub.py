"""The bidder sessions one server process holds, and delivery of fills and control notices to them.

Fills are published by whichever process settled the request (`Keys.fills_channel(provider)`);
a process subscribes to a provider's channel while it holds a live session of that provider (so
a process without bidder sessions reads no fills at all) and writes each fill to every such
session, so a provider with several sessions receives each fill once per session. A
`provider_removed` notice on `Keys.control_channel()` closes that provider's sessions everywhere,
and a `key_revoked` notice is handed to `on_key_revoked` (the feed closes that key's connections).
Pub/sub is fire-and-forget: a fill published while no session of the provider is connected is
not kept (the ledger is the record; fills are notices).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from auction.keys import Keys

log = logging.getLogger("auction.bidders")

Writer = Callable[[str], Awaitable[None]]
Closer = Callable[[int, str], Awaitable[None]]
CLOSE_PROVIDER_REMOVED = 4004


class BidderHub:
    """Live bidder sessions of this process, by provider."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        on_key_revoked: Callable[[str], object] | None = None,
    ) -> None:
        self._redis = redis
        self._on_key_revoked = on_key_revoked
        self._keys = keys
        self._sessions: dict[str, dict[str, tuple[Writer, Closer]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._pubsub: PubSub | None = None
        self._changes: set[asyncio.Task[None]] = set()

    async def register(self, provider: str, session_id: str, write: Writer, close: Closer) -> None:
        """Deliver the provider's fills to this session; the first one subscribes its channel."""
        first = provider not in self._sessions
        self._sessions.setdefault(provider, {})[session_id] = (write, close)
        if first:
            await self._channel("subscribe", provider)

    def unregister(self, provider: str, session_id: str) -> None:
        """Stop delivering to the session; the last one unsubscribes (in the background)."""
        sessions = self._sessions.get(provider, {})
        sessions.pop(session_id, None)
        if not sessions and self._sessions.pop(provider, None) is not None:
            task = asyncio.ensure_future(self._channel("unsubscribe", provider))
            self._changes.add(task)
            task.add_done_callback(self._changes.discard)

    async def _channel(self, verb: str, provider: str) -> None:
        """(Un)subscribe the provider's fill channel; if Redis is away, the listener's
        reconnection subscribes to every provider this process then holds."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        subscribed = provider in self._sessions
        if (verb == "subscribe") != subscribed:
            return  # it changed again meanwhile
        with contextlib.suppress(RedisError, OSError):
            command = pubsub.subscribe if verb == "subscribe" else pubsub.unsubscribe
            await command(self._keys.fills_channel(provider))

    def session_count(self, provider: str | None = None) -> int:
        if provider is not None:
            return len(self._sessions.get(provider, {}))
        return sum(len(s) for s in self._sessions.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="bidder-hub")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        for change in list(self._changes):
            change.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _listen(self) -> None:
        fills_prefix = self._keys.fills_channel("")
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [self._keys.fills_channel(p) for p in self._sessions]
                await pubsub.subscribe(self._keys.control_channel(), *channels)
                self._pubsub = pubsub
                self._ready.set()
                async for message in pubsub.listen():
                    channel = _text(message.get("channel"))
                    data = _text(message.get("data"))
                    if channel.startswith(fills_prefix):
                        await self._deliver(channel[len(fills_prefix) :], data)
                    else:
                        await self._control(data)
            except RedisError as exc:
                log.warning("bidder hub lost Redis (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(0.5)
            finally:
                self._pubsub = None
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    async def _deliver(self, provider: str, text: str) -> None:
        for session_id, (write, _) in list(self._sessions.get(provider, {}).items()):
            try:
                await write(text)
            except Exception as exc:
                log.info("fill to %s session %s not sent: %s", provider, session_id, exc)

    async def _control(self, text: str) -> None:
        try:
            notice = json.loads(text)
        except ValueError:
            return
        if not isinstance(notice, dict):
            return
        if notice.get("type") == "provider_removed":
            provider = str(notice.get("provider"))
            for _, close in list(self._sessions.get(provider, {}).values()):
                await close(CLOSE_PROVIDER_REMOVED, "provider removed")
        elif notice.get("type") == "key_revoked" and self._on_key_revoked is not None:
            self._on_key_revoked(str(notice.get("key_id")))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
