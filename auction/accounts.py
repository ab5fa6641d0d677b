"""Client keys and their budgets: issue, authenticate, hold, settle and release, in Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast, get_args

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from auction.errors import BudgetExceeded, InvalidApiKey, InvalidRequest, NotFound
from auction.keys import Keys
from auction.scripts import register
from clearing.money import MAX_NANOS, Nanos, format_usd

log = logging.getLogger(__name__)

Period = Literal["day", "month", "total"]
PERIODS: frozenset[str] = frozenset(get_args(Period))
SettleStatus = Literal["settled", "repeat", "no_hold"]
Clock = Callable[[], int]

KEY_PREFIX = "sk-auc-"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_HOLD_ID = 200
# A settle mark outlives any plausible retry of the same settle; older marks are pruned.
SETTLED_KEEP_MS = 7 * 86_400_000
DAY_MS = 86_400_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def token_hash(token: str) -> str:
    """SHA-256 hex of a token: tokens are high-entropy, so an unsalted fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- budget periods (pure): UTC days since the epoch, or year * 12 + month - 1 ---------------------
def period_id(period: Period, now_ms: int) -> int:
    """The id of the budget period that `now_ms` falls in; the Lua scripts compute the same."""
    if period == "total":
        return 0
    if period == "day":
        return now_ms // DAY_MS
    when = datetime.fromtimestamp(now_ms // 1000, UTC)
    return when.year * 12 + when.month - 1


def period_bounds(period: Period, now_ms: int) -> tuple[int | None, int | None]:
    """Start and end (the reset time) in epoch ms of the period holding `now_ms`; None for total."""
    if period == "total":
        return None, None
    pid = period_id(period, now_ms)
    if period == "day":
        return pid * DAY_MS, (pid + 1) * DAY_MS
    year, month0 = divmod(pid, 12)
    next_year, next_month0 = divmod(pid + 1, 12)
    start = datetime(year, month0 + 1, 1, tzinfo=UTC)
    end = datetime(next_year, next_month0 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


# -- records --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A client key as the service sees it (never its token or the token's hash)."""

    key_id: str
    name: str
    budget: Nanos
    period: Period
    revoked: bool
    created_ms: int


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


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What a settle did. `capped` means the charge asked for was more than the hold."""

    status: SettleStatus
    charged: Nanos
    requested: Nanos
    capped: bool
    counted: bool  # False when the hold's period ended before the settle (see Accounts.settle)


def _record(raw: dict[bytes | str, bytes | str]) -> KeyRecord:
    row = {_text(k): _text(v) for k, v in raw.items()}
    return KeyRecord(
        key_id=row["id"],
        name=row["name"],
        budget=Nanos(int(row["budget"])),
        period=_check_period(row["period"]),
        revoked=row.get("revoked") == "1",
        created_ms=int(row["created_ms"]),
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            "a key name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            param="name",
        )


def _check_nanos(value: int, param: str) -> Nanos:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NANOS:
        raise InvalidRequest(
            f"{param} must be a whole number of nano-USD in [0, 2^53)", param=param
        )
    return Nanos(value)


def _check_period(period: str) -> Period:
    if period not in PERIODS:
        raise InvalidRequest("period must be one of day, month, total", param="period")
    return cast(Period, period)


def _check_hold_id(hold_id: str) -> None:
    if not isinstance(hold_id, str) or not 0 < len(hold_id) <= MAX_HOLD_ID:
        raise InvalidRequest(f"a hold id is 1-{MAX_HOLD_ID} characters", param="hold_id")


def _over_budget(amount: int, key: KeyRecord, spent: int, held: int) -> BudgetExceeded:
    remaining = max(0, key.budget - spent - held)
    per = "in total" if key.period == "total" else f"per {key.period}"
    return BudgetExceeded(
        f"the worst-case cost ${format_usd(amount)} does not fit the key's remaining budget "
        f"${format_usd(remaining)} (budget ${format_usd(key.budget)} {per}, "
        f"spent ${format_usd(spent)}, held for requests in flight ${format_usd(held)})"
    )


class Accounts:
    """Client keys and budgets. Every budget change is one Lua script on the key's slot.

    `clock` returns epoch ms; without one, the scripts read Redis TIME, so every server process
    agrees on periods and hold expiry. Tests inject a clock to step over period boundaries.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, clock: Clock | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._create = register(redis, "account_create")
        self._budget = register(redis, "account_budget")
        self._hold = register(redis, "hold", prelude="account_lib")
        self._settle = register(redis, "hold_settle", prelude="account_lib")
        self._release = register(redis, "hold_release")

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(self._clock())

    def _hold_keys(self, key_id: str) -> list[str]:
        k = self._keys
        return [k.account(key_id), k.holds(key_id), k.hold_amounts(key_id), k.hold_periods(key_id)]

    # -- keys -------------------------------------------------------------------------------------
    async def create_key(self, name: str, budget: Nanos, period: Period) -> tuple[KeyRecord, str]:
        """Issue a key. Returns its record and the plaintext token, which is never stored.

        Raises:
            InvalidRequest: a bad name, budget or period, or the name is taken.
        """
        _check_name(name)
        budget = _check_nanos(budget, "budget")
        period = _check_period(period)
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
        raw = await self._redis.hgetall(self._keys.account(_text(key_id))) if key_id else {}
        stored = _text(raw.get(b"token_hash") or raw.get("token_hash") or "")
        if not raw or not hmac.compare_digest(stored, digest):
            raise InvalidApiKey("unknown API key")
        record = _record(raw)
        if record.revoked:
            raise InvalidApiKey("this API key has been revoked")
        return record

    async def find(self, name: str) -> KeyRecord | None:
        """The key with this name, revoked or not, or None."""
        key_id = await self._redis.hget(self._keys.key_names(), name)
        if key_id is None:
            return None
        raw = await self._redis.hgetall(self._keys.account(_text(key_id)))
        return _record(raw) if raw else None

    async def find_by_id(self, key_id: str) -> KeyRecord:
        """The key with this id.

        Raises:
            NotFound: no such key.
        """
        raw = await self._redis.hgetall(self._keys.account(key_id))
        if not raw:
            raise NotFound("no such key")
        return _record(raw)

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, by name."""
        names = await self._redis.hgetall(self._keys.key_names())
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in names.values():
                pipe.hgetall(self._keys.account(_text(key_id)))
            rows: Sequence[dict[bytes | str, bytes | str]] = await pipe.execute()
        return sorted((_record(raw) for raw in rows if raw), key=lambda r: r.name)

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
            await self._redis.hdel(self._keys.key_index(), _text(digest))
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
        budget = _check_nanos(budget, "budget")
        new_period = "" if period is None else _check_period(period)
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
        record = _record(raw)
        row = {_text(f): _text(v) for f, v in raw.items()}
        stored = int(row["period_id"]) if row["period_id"] else None
        current = period_id(record.period, now)
        spent = int(row["spent"]) if stored is not None and stored >= current else 0
        live = {_text(m) for m, expires in expiries if expires > now}
        held = sum(int(v) for m, v in amounts.items() if _text(m) in live)
        start, end = period_bounds(record.period, now)
        remaining = max(0, record.budget - spent - held)
        return AccountSnapshot(record, Nanos(spent), Nanos(held), Nanos(remaining), start, end)

    async def _redis_ms(self) -> int:
        secs, micros = await self._redis.time()
        return secs * 1000 + micros // 1000

    # -- holds ------------------------------------------------------------------------------------
    async def hold(self, key_id: str, hold_id: str, amount: Nanos, ttl_ms: int) -> None:
        """Reserve `amount` of the key's budget until settled, released or `ttl_ms` has passed.

        Expired holds are dropped first, so a crashed server's holds give their budget back.
        Holding the same id and amount again is a no-op.

        Raises:
            BudgetExceeded: spent + live holds + amount would pass the budget.
            InvalidApiKey: the key is unknown or revoked.
            InvalidRequest: bad arguments, or the hold id was used already (settled, or
                held with another amount).
        """
        _check_hold_id(hold_id)
        amount = _check_nanos(amount, "amount")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise InvalidRequest("ttl_ms must be a positive whole number", param="ttl_ms")
        reply = await self._hold(
            keys=[*self._hold_keys(key_id), self._keys.settled_holds(key_id)],
            args=[hold_id, amount, ttl_ms, self._now_arg()],
        )
        status, spent, held = _text(reply[0]), int(reply[1]), int(reply[2])
        if status == "ok":
            return
        if status in ("no_account", "revoked"):
            raise InvalidApiKey("unknown API key" if status == "no_account" else "key revoked")
        if status == "used":
            raise InvalidRequest(f"hold id {hold_id!r} was already used", param="hold_id")
        raise _over_budget(amount, await self.find_by_id(key_id), spent, held)

    async def settle(self, key_id: str, hold_id: str, charge: Nanos) -> Nanos:
        """Turn a hold into a charge of at most the hold; returns the amount charged.

        Idempotent per hold id: settling again changes nothing and returns the first charge
        (for SETTLED_KEEP_MS; a retry later than that finds no hold and charges nothing).
        A charge above the hold is capped to it (and logged). A hold that was released or has
        expired charges nothing. At a period boundary, the charge belongs to the period the hold
        was taken in, which already reserved it: if that period has ended, the charge is not added
        to the new period's spent (the ledger still records it). See `settle_detail`.
        """
        return (await self.settle_detail(key_id, hold_id, charge)).charged

    async def settle_detail(self, key_id: str, hold_id: str, charge: Nanos) -> SettleOutcome:
        """`settle`, reporting whether it repeated, found no hold, capped or counted the charge."""
        _check_hold_id(hold_id)
        charge = _check_nanos(charge, "charge")
        reply = await self._settle(
            keys=[
                *self._hold_keys(key_id),
                self._keys.settled_holds(key_id),
                self._keys.settled_order(key_id),
            ],
            args=[hold_id, charge, self._now_arg(), SETTLED_KEEP_MS],
        )
        status, charged, counted = _text(reply[0]), int(reply[1]), bool(reply[2])
        capped = status == "settled" and charged < charge
        if capped:
            log.warning(
                "settle of hold %s capped: %d nanos asked, %d held", hold_id, charge, charged
            )
        if status == "no_hold":
            log.warning("settle of hold %s found no live hold; nothing charged", hold_id)
        assert status in get_args(SettleStatus), status
        return SettleOutcome(cast(SettleStatus, status), Nanos(charged), charge, capped, counted)

    async def release(self, key_id: str, hold_id: str) -> bool:
        """Give a hold back without charging; True if it was live. Idempotent."""
        _check_hold_id(hold_id)
        removed = await self._release(keys=self._hold_keys(key_id)[1:], args=[hold_id])
        return bool(removed)
