"""This process's copy of the order book, kept current by following the books' change streams.

The replica loads each model's book (`Book.snapshot`) and then reads the change streams after
the ids the snapshots were consistent with (one XREAD BLOCK over every model, on a connection of
its own with the lean RESP client: every reservation and settlement wakes it, and redis-py costs
several times more CPU per wake for an XREAD over a whole catalogue). Entries carry the
model's change number `n`; a jump means the stream was trimmed past entries this replica never
read, so it reloads that model and tells listeners with a `resync` change. The replica is for
clearing and the feed: it may lag by a few milliseconds, and `Book.reserve` has the last word.

After a read that found a few changes (fewer than `gather_below`, 16), the replica waits
`gather_ms` (5 ms) before the next one, so that the trickle of a busy gateway (a reservation
and a settlement per request) arrives a batch per read instead of one wake per change: clearing
sees such a change at most that much later, and the process spends far less per change. After
a read that found more, it reads again at once: a flood (bidders re-quoting thousands of offers
a second) batches itself, since whatever arrived while one batch was applied is the next, and
waiting would only add the delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auction.book import Book
from auction.book_stream import REMOVALS, BookChange, parse_change, text
from auction.keys import Keys
from auction.offer_codec import OfferCodec
from auction.resp import RespClient, RespError, StreamReads, url_of
from clearing.index import BookIndex
from clearing.types import BookSnapshot, OfferLive

log = logging.getLogger(__name__)

Listener = Callable[[BookChange], None]
_MAX_BACKOFF_S = 2.0
_IDLE = OfferLive()


class BookReplica:
    """Live offers of `models` (an `index`) and their in-flight counts (`live`), kept current."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        models: Sequence[str],
        *,
        block_ms: int = 1000,
        count: int = 1000,
        gather_ms: int = 5,
        gather_below: int = 16,
        codec: OfferCodec | None = None,
    ) -> None:
        self._redis = redis
        self._resp = RespClient(url_of(redis))  # blocks in XREAD: used for nothing else
        self._keys = keys
        self._book = Book(redis, keys, codec=codec)
        self._decode = self._book.codec.decode
        self._streams = {keys.book_changes(m): m for m in models}
        self._block_ms = block_ms
        self._count = count
        self._gather_s = gather_ms / 1000
        self._gather_below = gather_below
        self.index = BookIndex()
        self._live: dict[str, OfferLive] = {}
        self._positions: dict[str, str] = {}  # model -> last stream id applied
        self._versions: dict[str, int] = {}  # model -> last change number applied
        self._listeners: list[Listener] = []
        self._applied = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # reloads after a gap, since start

    @property
    def live(self) -> Mapping[str, OfferLive]:
        """ref -> live state, for the offers that have any."""
        return self._live

    def snapshot(self, model: str | None = None) -> BookSnapshot:
        """The offers of `model` (or every model) with their live state, for the clearing engine."""
        offers = self.index.offers(model)
        live = {o.ref: self._live[o.ref] for o in offers if o.ref in self._live}
        return BookSnapshot(offers, live)

    def version(self, model: str) -> int:
        """The change number of `model`'s book that this replica has applied."""
        return self._versions.get(model, 0)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every change after it is applied; returns a function to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def start(self) -> None:
        """Load every model's book, then follow the change streams in a task."""
        for model in self._streams.values():
            await self._reload(model, announce=False)
        self._task = asyncio.create_task(self._follow(), name="book-replica")

    async def stop(self) -> None:
        """Stop following (the index keeps what it had)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._resp.aclose()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds, checked after every applied batch.

        Raises:
            TimeoutError: it did not hold within `timeout` seconds.
        """
        async with asyncio.timeout(timeout), self._applied:
            await self._applied.wait_for(predicate)

    async def sync(self, timeout: float = 5.0) -> None:
        """Wait until every change made to the books before this call has been applied."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for model in self._streams.values():
                pipe.get(self._keys.book_version(model))
            current = await pipe.execute()
        targets = {
            model: 0 if v is None else int(text(v))
            for model, v in zip(self._streams.values(), current, strict=True)
        }
        await self.wait_for(lambda: all(self.version(m) >= n for m, n in targets.items()), timeout)

    # -- following ---------------------------------------------------------------------------
    async def _follow(self) -> None:
        backoff = 0.05
        reads = StreamReads(self._resp, list(self._streams), self._count, self._block_ms)
        while True:
            found = 0
            try:
                ids = [self._positions[m] for m in self._streams.values()]
                for key, entries in await reads.read(ids):
                    await self._apply(self._streams[key], entries)
                    found += len(entries)
                backoff = 0.05
            except (RedisError, RespError, OSError):  # ConnectionError is an OSError
                log.warning("book replica: reading changes failed", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            async with self._applied:
                self._applied.notify_all()
            if 0 < found < self._gather_below and self._gather_s > 0:
                await asyncio.sleep(self._gather_s)

    async def _apply(self, model: str, entries: Sequence[tuple[str, object]]) -> None:
        for stream_id, fields in entries:
            change = parse_change(stream_id, fields, self._decode)
            if change.n != self._versions[model] + 1:
                log.info("book replica: gap in %s after change %d", model, self._versions[model])
                await self._reload(model, announce=True)
                return  # the rest of the batch is read again after the reloaded position
            self._apply_change(change)
            self._positions[model] = change.stream_id
            self._versions[model] = change.n
            self._notify(change)

    def _apply_change(self, change: BookChange) -> None:
        ref = change.ref
        if change.kind in REMOVALS:
            self.index.remove(ref)
            self._live.pop(ref, None)
        elif change.offer is not None:
            self.index.upsert(change.offer)
        if change.in_flight is not None and self.index.get(ref) is not None:
            old = self._live.get(ref, _IDLE)
            self._live[ref] = OfferLive(  # every field named: `replace` costs several times more
                in_flight=change.in_flight,
                tokens_this_minute=change.tokens or 0,
                cooling_down=old.cooling_down,
                observed_ttft_ms=old.observed_ttft_ms,
                observed_output_tokens_per_s=old.observed_output_tokens_per_s,
            )

    async def _reload(self, model: str, *, announce: bool) -> None:
        snap = await self._book.snapshot(model)
        for offer in self.index.offers(model):
            self.index.remove(offer.ref)
            self._live.pop(offer.ref, None)
        for offer, live in snap.entries:
            self.index.upsert(offer)
            self._live[offer.ref] = live
        self._positions[model] = snap.stream_id
        self._versions[model] = snap.version
        if announce:
            self.reloads += 1
            now_ms = int(time.time() * 1000)
            self._notify(BookChange("resync", model, "", snap.version, now_ms, snap.stream_id))

    def _notify(self, change: BookChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken listener must not stop the replica
                log.exception("book replica: listener failed on %s", change)
