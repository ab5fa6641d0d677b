"""The public trade stream: publishing a settled trade, and following the stream for the feed
only while some subscriber of this process wants it.

Every settlement appends to `Keys.trades()`; a process whose hub read it regardless would wake
on every settled request even with nobody to tell. So the follower reads only while `want(True)`
holds: it then finds the stream's newest entry (one round trip) and reads on from there with
XREAD BLOCK (not a consumer group: every process needs every trade). When nobody wants trades any
more it stops after its current read (at most `block_ms`). `positioned` says whether it knows
where to read from: a trade appended after that is read; the hub holds a new trades
subscriber's acknowledgement until then, so a trade the client causes after it is never missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auction.book_stream import text
from auction.commands import Cmd, Script, send_one
from auction.feed_wire import Trade, dumps
from auction.keys import Keys
from auction.resp import RespClient, RespError, StreamReads

__all__ = ["TradeFollower", "publish_trade", "trade_publish_command"]

log = logging.getLogger(__name__)


async def publish_trade(
    redis: aioredis.Redis, keys: Keys, trade: Trade, *, maxlen: int = 10_000
) -> str:
    """Append a settled trade to the public trade stream; returns the stream entry id.

    The settlement code calls this once per settled request; every server process's hub with
    trades subscribers reads the stream and sends the trade to them.
    """
    result = await send_one(redis, trade_publish_command(keys, trade, maxlen=maxlen))
    assert isinstance(result, list)
    return text(result[1])


def trade_publish_command(keys: Keys, trade: Trade, *, maxlen: int = 10_000) -> Cmd:
    """The `trade_publish` script (for a batch, or `publish_trade`); replies {n, entry id}."""
    body = dumps(trade.to_json())
    return TRADE_PUBLISH.command([keys.trades(), keys.trades_version()], [maxlen, body])


_MAX_BACKOFF_S = 2.0
TRADE_PUBLISH = Script("trade_publish")


class TradeFollower:
    """Reads trades while wanted and hands them on.

    Args:
        redis: the market's Redis (the newest entry is found with it).
        resp: a lean client used for nothing else (it blocks in XREAD).
        keys: key names.
        on_trade: called with each trade read.
        on_missed: called with how many trades were trimmed before they could be read.
        on_positioned: called when reading starts (or positioning failed: nothing can be read).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        resp: RespClient,
        keys: Keys,
        *,
        on_trade: Callable[[Trade], None],
        on_missed: Callable[[int], None],
        on_positioned: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._resp = resp
        self._keys = keys
        self._on_trade = on_trade
        self._on_missed = on_missed
        self._on_positioned = on_positioned
        self._wanted = asyncio.Event()
        self.positioned = False
        self.block_ms = 1000
        self.batch = 100
        self.reads = 0

    @property
    def wanted(self) -> bool:
        return self._wanted.is_set()

    def want(self, wanted: bool) -> None:
        if wanted:
            self._wanted.set()
        else:
            self._wanted.clear()

    async def run(self) -> None:
        """Follow the stream whenever wanted, until cancelled."""
        backoff = 0.05
        while True:
            await self._wanted.wait()
            try:
                last_id, last_n = await self._position()
            except (RedisError, RespError, OSError):
                log.warning("feed: finding the trade stream's end failed", exc_info=True)
                self._on_positioned()  # nothing can be read now: let held connections go
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            backoff, self.positioned = 0.05, True
            self._on_positioned()
            try:
                await self._follow(last_id, last_n)
            finally:
                self.positioned = False

    async def _position(self) -> tuple[str, int | None]:
        newest = await self._redis.xrevrange(self._keys.trades(), count=1)
        if not newest:
            return "0-0", None
        entry_id, fields = newest[0]
        return text(entry_id), _entry_n(fields)

    async def _follow(self, last_id: str, last_n: int | None) -> None:
        backoff = 0.05
        reads = StreamReads(self._resp, [self._keys.trades()], self.batch, self.block_ms)
        while self._wanted.is_set():
            try:
                [(_, entries)] = await reads.read([last_id]) or [("", [])]
                self.reads += 1
                backoff = 0.05
            except (RedisError, RespError, OSError):  # ConnectionError is an OSError
                log.warning("feed: reading trades failed", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            for entry_id, fields in entries:
                n = _entry_n(fields)
                if last_n is not None and n is not None and n > last_n + 1:
                    self._on_missed(n - last_n - 1)
                last_id, last_n = text(entry_id), n
                trade = _entry_trade(fields)
                if trade is not None:
                    self._on_trade(trade)


def _field(fields: object, name: str) -> str | None:
    if not isinstance(fields, dict):
        return None
    value = fields.get(name.encode(), fields.get(name))
    return None if value is None else text(value)


def _entry_n(fields: object) -> int | None:
    n = _field(fields, "n")
    return None if n is None else int(n)


def _entry_trade(fields: object) -> Trade | None:
    raw = _field(fields, "trade")
    try:
        return Trade.from_json(json.loads(raw or ""))
    except (ValueError, TypeError, KeyError):
        log.warning("feed: skipping a malformed trade entry: %.200s", raw)
        return None
