"""Client keys and their budgets in Redis: issue, authenticate, revoke, re-budget, and read."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from auction.api_keys import KEY_PREFIX, check_name, key_record, read_key, token_hash
from auction.api_keys import KeyRecord as KeyRecord  # re-export: auction.routes.feed
from auction.book_stream import text
from auction.budgets import Period, check_nanos, check_period, period_bounds, period_id
from auction.errors import InvalidApiKey, InvalidRequest, NotFound
from auction.holds import Clock, Holds
from auction.keys import Keys
from auction.scripts import register
from clearing.money import Nanos

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """A key's budget at one moment; `spent` is for the current period, `remaining` >= 0."""

    key: KeyRecord
    spent: Nanos
    held: Nanos
    remaining: Nanos
    period_start_ms: int | None  # None for a total budget
    resets_ms: int | None  # when the next period starts; None for a total budget

    @property
    def budget(self) -> Nanos:
        return self.key.budget

    @property
    def period(self) -> Period:
        return self.key.period


class Accounts(Holds):
    """Client keys and budgets. Every budget change is one Lua script on the key's slot.

    Holds on a key's budget (`hold`, `settle`, `settle_detail`, `release`) come from `Holds`.
    `clock` returns epoch ms; without one, the scripts read Redis TIME, so every server process
    agrees on periods and hold expiry. Tests inject a clock to step over period boundaries.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, clock: Clock | None = None) -> None:
        super().__init__(redis, keys, clock=clock)
        self._create = register(redis, "account_create")
        self._budget = register(redis, "account_budget")

    async def create_key(self, name: str, budget: Nanos, period: Period) -> tuple[KeyRecord, str]:
        """Issue a key. Returns its record and the plaintext token, which is never stored.

        Raises:
            InvalidRequest: a bad name, budget or period, or the name is taken.
        """
        check_name(name)
        budget = check_nanos(budget, "budget")
        period = check_period(period)
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = token_hash(token)
        key_id = uuid.uuid4().hex
        created_ms = self._clock() if self._clock else await self._redis_ms()
        fields: dict[FieldT, EncodableT] = {
            "id": key_id, "name": name, "token_hash": digest, "budget": str(budget),
            "period": period, "spent": "0", "period_id": "", "revoked": "0",
            "created_ms": str(created_ms),
        }  # fmt: skip
        # The account hash first, then the index: a crash between leaves only an unreachable hash.
        await self._redis.hset(self._keys.account(key_id), mapping=fields)
        claimed = await self._create(
            keys=[self._keys.key_names(), self._keys.key_index()], args=[name, key_id, digest]
        )
        if not claimed:
            await self._redis.delete(self._keys.account(key_id))
            raise InvalidRequest(f"a key named {name!r} already exists", param="name")
        log.info("client key created: %s (%s)", name, key_id)
        return KeyRecord(key_id, name, budget, period, False, created_ms), token

    async def authenticate(self, token: str | None) -> KeyRecord:
        """The live key this token belongs to.

        Raises:
            InvalidApiKey: no token, an unknown one, or a revoked key.
        """
        if not token or not token.startswith(KEY_PREFIX):
            raise InvalidApiKey("missing or malformed API key")
        digest = token_hash(token)
        key_id = await self._redis.hget(self._keys.key_index(), digest)
        raw = await self._redis.hgetall(self._keys.account(text(key_id))) if key_id else {}
        stored = text(raw.get(b"token_hash") or raw.get("token_hash") or "")
        if not raw or not hmac.compare_digest(stored, digest):
            raise InvalidApiKey("unknown API key")
        record = key_record(raw)
        if record.revoked:
            raise InvalidApiKey("this API key has been revoked")
        return record

    async def find(self, name: str) -> KeyRecord | None:
        """The key with this name, revoked or not, or None."""
        key_id = await self._redis.hget(self._keys.key_names(), name)
        if key_id is None:
            return None
        raw = await self._redis.hgetall(self._keys.account(text(key_id)))
        return key_record(raw) if raw else None

    async def find_by_id(self, key_id: str) -> KeyRecord:
        """The key with this id.

        Raises:
            NotFound: no such key.
        """
        return await read_key(self._redis, self._keys, key_id)

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, by name."""
        names = await self._redis.hgetall(self._keys.key_names())
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in names.values():
                pipe.hgetall(self._keys.account(text(key_id)))
            rows: Sequence[dict[bytes | str, bytes | str]] = await pipe.execute()
        return sorted((key_record(raw) for raw in rows if raw), key=lambda r: r.name)

    async def revoke(self, name: str) -> KeyRecord:
        """Revoke a key for good (its name stays taken); revoking twice is harmless.

        Every process hears {"type": "key_revoked", "key_id", "name"} on the control channel.

        Raises:
            NotFound: no key has this name.
        """
        record = await self.find(name)
        if record is None:
            raise NotFound(f"no key named {name!r}")
        account = self._keys.account(record.key_id)
        await self._redis.hset(account, "revoked", "1")
        digest = await self._redis.hget(account, "token_hash")
        if digest is not None:
            await self._redis.hdel(self._keys.key_index(), text(digest))
        event = {"type": "key_revoked", "key_id": record.key_id, "name": name}
        await self._redis.publish(self._keys.control_channel(), json.dumps(event))
        log.info("client key revoked: %s (%s)", name, record.key_id)
        return KeyRecord(record.key_id, name, record.budget, record.period, True, record.created_ms)

    async def set_budget(self, name: str, budget: Nanos, period: Period | None = None) -> KeyRecord:
        """Change a key's budget, and its period if given; a new period starts from zero spent.

        Lowering a budget below what is spent and held refuses new holds; existing ones stand.

        Raises:
            InvalidRequest: a bad budget or period. NotFound: no key has this name.
        """
        budget = check_nanos(budget, "budget")
        new_period = "" if period is None else check_period(period)
        record = await self.find(name)
        if record is None or not await self._budget(
            keys=[self._keys.account(record.key_id)], args=[budget, new_period]
        ):
            raise NotFound(f"no key named {name!r}")
        changed = await self.find(name)
        assert changed is not None
        return changed

    async def account(self, key_id: str) -> AccountSnapshot:
        """The key's budget now: spent this period, held by live holds, and what remains.

        Raises:
            NotFound: no such key.
        """
        k = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.hgetall(k.account(key_id))
            pipe.zrange(k.holds(key_id), 0, -1, withscores=True)
            pipe.hgetall(k.hold_amounts(key_id))
            (secs, micros), raw, expiries, amounts = await pipe.execute()
        if not raw:
            raise NotFound("no such key")
        now = self._clock() if self._clock else secs * 1000 + micros // 1000
        record = key_record(raw)
        row = {text(f): text(v) for f, v in raw.items()}
        stored = int(row["period_id"]) if row["period_id"] else None
        current = period_id(record.period, now)
        spent = int(row["spent"]) if stored is not None and stored >= current else 0
        live = {text(m) for m, expires in expiries if expires > now}
        held = sum(int(v) for m, v in amounts.items() if text(m) in live)
        start, end = period_bounds(record.period, now)
        remaining = max(0, record.budget - spent - held)
        return AccountSnapshot(record, Nanos(spent), Nanos(held), Nanos(remaining), start, end)

    async def _redis_ms(self) -> int:
        secs, micros = await self._redis.time()
        return secs * 1000 + micros // 1000
