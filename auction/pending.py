"""Settlements that finish after the client has its answer.

The answer's cost is computed in the process (`clearing.settle.charge`), so the client need not
wait for Redis to record it. Until a settlement lands, the request's budget hold still covers
its worst case, so a key can never overspend meanwhile; reads of the key's account or clearing
records in this process wait for its settlements first, so a client sees its own charges at
once. A settlement that finds Redis away is retried with backoff for `retry_s`; it is made of
idempotent steps per clearing id (budget, capacity, ledger), so a retry never charges twice.
On shutdown the market waits for the settlements still running.

A settlement starts `delay_s` (1 ms) after the answer: Redis runs one connection's commands in
order, and a settlement's scripts take it a few hundred microseconds, so a client's next
request, which usually arrives within that time, has its hold and reservation run first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0)  # about 4 s in all: a Redis restart's usual span
START_DELAY_S = 0.001


class PendingSettlements:
    """Runs settlements in the background, by key, and lets readers wait for them."""

    def __init__(
        self,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
        delay_s: float = START_DELAY_S,
    ) -> None:
        self._by_key: dict[str, set[asyncio.Task[None]]] = {}
        self._delays = retry_delays_s
        self._delay_s = delay_s

    def __len__(self) -> int:
        return sum(len(tasks) for tasks in self._by_key.values())

    def start(self, key_id: str, clearing_id: str, settle: Callable[[], Awaitable[object]]) -> None:
        """Run `settle()` (a fresh awaitable per try) until it succeeds or retries run out."""
        task = asyncio.ensure_future(self._run(clearing_id, settle))
        tasks = self._by_key.setdefault(key_id, set())
        tasks.add(task)
        task.add_done_callback(lambda t: self._done(key_id, t))

    async def settled(self, key_id: str) -> None:
        """Wait for the key's settlements started before this call."""
        tasks = self._by_key.get(key_id)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def all_settled(self) -> None:
        """Wait for every settlement started before this call."""
        tasks = [t for ts in self._by_key.values() for t in ts]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) for every settlement still running: the market is stopping."""
        tasks = [t for ts in self._by_key.values() for t in ts]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            log.error("a settlement did not finish before shutdown; its hold will expire")
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*late, return_exceptions=True)

    def _done(self, key_id: str, task: asyncio.Task[None]) -> None:
        tasks = self._by_key.get(key_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_key[key_id]

    async def _run(self, clearing_id: str, settle: Callable[[], Awaitable[object]]) -> None:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        for attempt, delay in enumerate((*self._delays, None)):
            try:
                await settle()
                return
            except (ConnectionError, OSError) as exc:  # Redis away: the steps are idempotent
                if delay is None:
                    log.error(
                        "settlement %s failed %d times (%s); its hold expires unspent",
                        clearing_id, attempt + 1, exc,
                    )  # fmt: skip
                    return
                log.warning("settlement %s: Redis away (%s); retrying", clearing_id, exc)
                await asyncio.sleep(delay)
            except Exception:
                log.exception("settlement %s failed; its hold expires unspent", clearing_id)
                return
