"""Holds on client keys' budgets: reserve, settle and release, each one Lua script in Redis."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast, get_args

import redis.asyncio as aioredis

from auction.api_keys import KeyRecord, read_key
from auction.book_stream import text
from auction.budgets import check_nanos
from auction.commands import Cmd, Script, send_one
from auction.errors import BudgetExceeded, InvalidApiKey, InvalidRequest
from auction.keys import Keys
from clearing.money import Nanos, format_usd

log = logging.getLogger(__name__)

SettleStatus = Literal["settled", "repeat", "no_hold"]
Clock = Callable[[], int]

MAX_HOLD_ID = 200
# A settle mark outlives any plausible retry of the same settle; older marks are pruned.
SETTLED_KEEP_MS = 7 * 86_400_000
HOLD = Script("hold", "account_lib")
HOLD_SETTLE = Script("hold_settle", "account_lib")
HOLD_RELEASE = Script("hold_release")


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What a settle did. `capped` means the charge asked for was more than the hold."""

    status: SettleStatus
    charged: Nanos
    requested: Nanos
    capped: bool
    counted: bool  # False when the hold's period ended before the settle (see Holds.settle)


def _check_hold_id(hold_id: str) -> None:
    if not isinstance(hold_id, str) or not 0 < len(hold_id) <= MAX_HOLD_ID:
        raise InvalidRequest(f"a hold id is 1-{MAX_HOLD_ID} characters", param="hold_id")


def over_budget(amount: int, key: KeyRecord, spent: int, held: int, budget: int) -> BudgetExceeded:
    """The refusal of a hold of `amount`, with what the budget looked like."""
    remaining = max(0, budget - spent - held)
    per = "in total" if key.period == "total" else f"per {key.period}"
    return BudgetExceeded(
        f"the worst-case cost ${format_usd(amount)} does not fit the key's remaining budget "
        f"${format_usd(remaining)} (budget ${format_usd(budget)} {per}, "
        f"spent ${format_usd(spent)}, held for requests in flight ${format_usd(held)})"
    )


def _hold_keys(keys: Keys, key_id: str) -> list[str]:
    return [keys.account(key_id), keys.holds(key_id), keys.hold_amounts(key_id),
            keys.hold_periods(key_id)]  # fmt: skip


def hold_command(
    keys: Keys, key_id: str, hold_id: str, amount: int, ttl_ms: int, now: str = ""
) -> Cmd:
    """The `hold` script (`now`: epoch ms, or "" for Redis TIME); replies {status, spent, held}."""
    return HOLD.command(
        [*_hold_keys(keys, key_id), keys.settled_holds(key_id)], [hold_id, amount, ttl_ms, now]
    )


def hold_settle_command(keys: Keys, key_id: str, hold_id: str, charge: int, now: str = "") -> Cmd:
    """The `hold_settle` script; replies {status, charged, counted}."""
    return HOLD_SETTLE.command(
        [*_hold_keys(keys, key_id), keys.settled_holds(key_id), keys.settled_order(key_id)],
        [hold_id, charge, now, SETTLED_KEEP_MS],
    )


def hold_release_command(keys: Keys, key_id: str, hold_id: str) -> Cmd:
    """The `hold_release` script; replies 1 if the hold was live."""
    return HOLD_RELEASE.command(_hold_keys(keys, key_id)[1:], [hold_id])


class Holds:
    """Holds on client keys' budgets. Each change is one Lua script on the key's slot.

    `clock` returns epoch ms; without one, the scripts read Redis TIME, so every server process
    agrees on periods and hold expiry. Tests inject a clock to step over period boundaries.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, clock: Clock | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(self._clock())

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
        amount = check_nanos(amount, "amount")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise InvalidRequest("ttl_ms must be a positive whole number", param="ttl_ms")
        cmd = hold_command(self._keys, key_id, hold_id, amount, ttl_ms, self._now_arg())
        reply = cast(list[bytes], await send_one(self._redis, cmd))
        status, spent, held = text(reply[0]), int(reply[1]), int(reply[2])
        if status == "ok":
            return
        if status in ("no_account", "revoked"):
            raise InvalidApiKey("unknown API key" if status == "no_account" else "key revoked")
        if status == "used":
            raise InvalidRequest(f"hold id {hold_id!r} was already used", param="hold_id")
        key = await read_key(self._redis, self._keys, key_id)
        raise over_budget(amount, key, spent, held, key.budget)

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
        charge = check_nanos(charge, "charge")
        cmd = hold_settle_command(self._keys, key_id, hold_id, charge, self._now_arg())
        reply = cast(list[bytes], await send_one(self._redis, cmd))
        status, charged, counted = text(reply[0]), int(reply[1]), bool(reply[2])
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
        cmd = hold_release_command(self._keys, key_id, hold_id)
        removed = await send_one(self._redis, cmd)
        return bool(removed)
