"""A per-process cache with a short TTL, loading each key once however many callers wait.

Why single flight: at 64 requests in flight, an entry that expires would otherwise be reloaded
by all 64 at once, every TTL, and the reload storm costs more than the cache saves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """`get(key, load)`: a value no older than `ttl_s`, or what `load()` gives (errors not kept)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._values.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._loading.get(key)
        if task is None:
            # Its own task: a caller that gives up (client gone) does not fail the others.
            task = asyncio.ensure_future(self._load(key, load))
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await load()
        finally:
            del self._loading[key]
        if len(self._values) >= self._max:
            self._values.clear()  # cheaper than LRU bookkeeping, and refilled within a TTL
        self._values[key] = (self._clock() + self._ttl, value)
        return value

    def drop(self, predicate: Callable[[K, V], bool] | None = None) -> None:
        """Forget every entry, or those for which `predicate(key, value)` holds."""
        if predicate is None:
            self._values.clear()
            return
        for key in [k for k, (_, v) in self._values.items() if predicate(k, v)]:
            del self._values[key]


def _retrieve(task: asyncio.Future[V]) -> None:
    """Mark a failed load's error as seen even if every waiter gave up."""
    if not task.cancelled():
        task.exception()
