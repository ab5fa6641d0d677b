"""The settlement ledger: one Redis stream entry per cleared request, written exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from auction.book_stream import text
from auction.commands import Cmd, Script, send_one
from auction.keys import Keys
from auction.resp import Arg
from clearing.money import Nanos, PriceMicros

PAGE = 500
LEDGER_APPEND = Script("ledger_append")


@dataclass(frozen=True, slots=True)
class Prices:
    """The prices a request was charged at, in micro-USD per million tokens."""

    input: PriceMicros
    output: PriceMicros
    cached_input: PriceMicros


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settled request: who bought, who sold, what was used, and what it cost."""

    clearing_id: str
    key_id: str
    provider: str
    offer_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost: Nanos
    prices: Prices
    ts: int  # epoch ms

    def __post_init__(self) -> None:
        counts = (self.input_tokens, self.output_tokens, self.cached_input_tokens, self.cost)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
            raise ValueError("token counts and cost must be non-negative integers")

    def fields(self) -> dict[str, str]:
        """The flat string fields of its stream entry."""
        return {
            "clearing_id": self.clearing_id,
            "key_id": self.key_id,
            "provider": self.provider,
            "offer_id": self.offer_id,
            "model": self.model,
            "input_tokens": str(self.input_tokens),
            "output_tokens": str(self.output_tokens),
            "cached_input_tokens": str(self.cached_input_tokens),
            "cost_nanos": str(self.cost),
            "input_price": str(self.prices.input),
            "output_price": str(self.prices.output),
            "cached_input_price": str(self.prices.cached_input),
            "ts": str(self.ts),
        }

    @classmethod
    def from_fields(cls, raw: Mapping[bytes | str, bytes | str]) -> Settlement:
        """Rebuild an entry read back from the stream."""
        f = {text(k): text(v) for k, v in raw.items()}
        return cls(
            clearing_id=f["clearing_id"],
            key_id=f["key_id"],
            provider=f["provider"],
            offer_id=f["offer_id"],
            model=f["model"],
            input_tokens=int(f["input_tokens"]),
            output_tokens=int(f["output_tokens"]),
            cached_input_tokens=int(f["cached_input_tokens"]),
            cost=Nanos(int(f["cost_nanos"])),
            prices=Prices(
                PriceMicros(int(f["input_price"])),
                PriceMicros(int(f["output_price"])),
                PriceMicros(int(f["cached_input_price"])),
            ),
            ts=int(f["ts"]),
        )


def ledger_append_command(keys: Keys, entry: Settlement) -> Cmd:
    """The `ledger_append` script for one settlement (for a batch, or `Ledger.append`)."""
    args: list[Arg] = [entry.clearing_id]
    for name, value in entry.fields().items():
        args += [name, value]
    return LEDGER_APPEND.command([keys.ledger(), keys.ledger_marks()], args)


class Ledger:
    """Append-only settlements in a stream, with a clearing id -> entry id mark for idempotency."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def append(self, entry: Settlement) -> str:
        """Write the settlement; returns its entry id.

        Idempotent per clearing id: if the clearing was written already, nothing is written and
        the first entry's id comes back (even if this entry differs; the first one stands).
        """
        entry_id = await send_one(self._redis, ledger_append_command(self._keys, entry))
        return text(cast(bytes, entry_id))

    async def get(self, clearing_id: str) -> Settlement | None:
        """The settlement written for a clearing, or None."""
        entry_id = await self._redis.hget(self._keys.ledger_marks(), clearing_id)
        if entry_id is None:
            return None
        rows = await self._redis.xrange(self._keys.ledger(), entry_id, entry_id)
        fields = rows[0][1] if rows else None
        return Settlement.from_fields(fields) if fields else None

    async def read(
        self, after: str | None = None, *, key_id: str | None = None
    ) -> AsyncIterator[tuple[str, Settlement]]:
        """Entries oldest first as (entry id, settlement), after entry id `after` if given.

        `key_id` keeps only that key's entries. Pages through the stream, so it may run long.
        """
        start = f"({after}" if after else "-"
        while True:
            rows = await self._redis.xrange(self._keys.ledger(), start, "+", count=PAGE)
            last = None
            for raw_id, raw in rows or []:
                last = raw_id
                if raw_id is None or not raw:
                    continue
                entry = Settlement.from_fields(raw)
                if key_id is None or entry.key_id == key_id:
                    yield text(raw_id), entry
            if last is None or len(rows or []) < PAGE:
                return
            start = f"({text(last)}"

    async def total_for(self, key_id: str) -> Nanos:
        """Everything the key has been charged, summed over the whole ledger (reconciliation)."""
        total = 0
        async for _, entry in self.read(key_id=key_id):
            total += entry.cost
        return Nanos(total)
