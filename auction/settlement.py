"""Taking and giving back what a request holds: budget holds, capacity, and the settlement.

A request's path through this module (the hold's own states are in `auction.holds`):

    take       the first attempt counts the request against the key's rate limit, holds the
               candidate's worst case against its budget and reserves one unit of the offer's
               capacity, all in one round trip (Redis runs them in that order); a fallback
               reserves again, and re-holds only when its worst case differs
    give_back  the attempt failed before the first byte: free the capacity, keep the hold
    settle     charge the tokens used at the cleared prices (the rest of the hold goes back),
               free the capacity, write the ledger once, publish the trade, send the fill
    release    the request ends without an answer: the hold goes back, nothing is charged

Steps that span Redis slots run in that order, so a crash in between leaves only a hold or a
reservation, and both expire by themselves; the ledger append is idempotent per clearing id.
A refused rate limit or budget undoes whatever else the same round trip took.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from auction.api_keys import KeyRecord
from auction.book_commands import release_command, reserve_command, settle_command
from auction.commands import Cmd, Runner, command, text
from auction.errors import BudgetExceeded, InvalidApiKey, RateLimited
from auction.feed_trades import trade_publish_command
from auction.feed_wire import Trade
from auction.holds import hold_command, hold_release_command, hold_settle_command, over_budget
from auction.keys import Keys
from auction.ledger import Prices, Settlement, ledger_append_command
from auction.ratelimit import rate_hit_command, rate_limited
from clearing.money import Nanos, format_usd
from clearing.qualify import out_tokens
from clearing.types import Candidate, Requirements, Usage

log = logging.getLogger(__name__)

Skip = Literal["gone", "repriced", "no_capacity"]


@dataclass(frozen=True, slots=True)
class Hold:
    """The budget a request holds now."""

    hold_id: str
    amount: Nanos


@dataclass(frozen=True, slots=True)
class Ticket:
    """One attempt's claim: the candidate, the hold covering it, and its reservation."""

    candidate: Candidate
    hold: Hold
    reservation_id: str


@dataclass(slots=True)
class Position:
    """What one request holds across its attempts; `rate_limit` is counted on the first take."""

    clearing_id: str
    key: KeyRecord
    requirements: Requirements
    rate_limit: int | None = None
    hold: Hold | None = None
    holds_taken: int = 0


class Clearinghouse:
    """Holds, reservations and settlements for client requests (see the module docstring)."""

    def __init__(self, runner: Runner, keys: Keys, clock_ms: Callable[[], int]) -> None:
        self._run = runner.run
        self._keys = keys
        self._clock_ms = clock_ms

    async def count(self, key_id: str, limit: int) -> None:
        """Count a request that takes nothing (a quote, or one no offer can serve).

        Raises:
            RateLimited: the key is over its limit.
        """
        [reply] = await self._run(rate_hit_command(self._keys, key_id, limit, self._clock_ms()))
        allowed, retry = cast(list[int], reply)
        if not allowed:
            raise rate_limited(limit, int(retry))

    async def take(
        self, pos: Position, candidate: Candidate, attempt: int, ttl_ms: int
    ) -> Ticket | Skip:
        """Hold the candidate's worst case (if not held already), then reserve its capacity.

        Returns the ticket, or why the offer cannot be had now (the hold is kept for the next).

        Raises:
            RateLimited: the first take found the key over its rate limit.
            BudgetExceeded: the worst case does not fit the key's remaining budget.
            InvalidApiKey: the key was revoked or deleted meanwhile.
        """
        k, key_id = self._keys, pos.key.key_id
        batch: list[Cmd] = []
        limit, pos.rate_limit = pos.rate_limit, None
        if limit is not None:
            batch.append(rate_hit_command(k, key_id, limit, self._clock_ms()))
        amount, old, new = candidate.worst_case, pos.hold, None
        if old is None or old.amount != amount:
            if old is not None:
                batch.append(hold_release_command(k, key_id, old.hold_id))
                pos.hold = None
            pos.holds_taken += 1
            new = Hold(f"{pos.clearing_id}.h{pos.holds_taken}", amount)
            batch.append(hold_command(k, key_id, new.hold_id, amount, ttl_ms))
        offer = candidate.offer
        rid = f"{pos.clearing_id}.r{attempt}"
        tokens = pos.requirements.input_tokens + out_tokens(pos.requirements, offer)
        batch.append(reserve_command(k, offer, rid, ttl_ms, tokens))
        replies = await self._run(*batch)
        reserved = text(cast(list[object], replies[-1])[0])
        held = cast(list[object], replies[-2]) if new is not None else None
        refusal = _refusal(limit, replies[0], held, amount, pos.key)
        if refusal is not None:
            undo = [hold_release_command(k, key_id, new.hold_id)] if new is not None else []
            if reserved == "ok":
                undo.append(release_command(k, offer, rid))
            if undo:
                await self._run(*undo)
            raise refusal
        if new is not None:
            pos.hold = new
        assert pos.hold is not None
        if reserved != "ok":
            return cast(Skip, reserved)
        return Ticket(candidate, pos.hold, rid)

    async def give_back(self, ticket: Ticket, *also: Cmd) -> list[object]:
        """Free an attempt's capacity unused (its hold stays, for the next candidate).

        `also` rides in the same round trip; returns its replies.
        """
        offer = ticket.candidate.offer
        replies = await self._run(release_command(self._keys, offer, ticket.reservation_id), *also)
        return replies[1:]

    async def release(self, pos: Position) -> None:
        """Give the request's hold back uncharged (nothing, if it holds none)."""
        if pos.hold is not None:
            hold, pos.hold = pos.hold, None
            await self._run(hold_release_command(self._keys, pos.key.key_id, hold.hold_id))

    async def settle(
        self, pos: Position, ticket: Ticket, usage: Usage, cost: Nanos, also: Sequence[Cmd]
    ) -> tuple[Nanos, list[object]]:
        """Charge `cost` (`usage` at the cleared prices: `clearing.settle.charge`), free the
        capacity, write the ledger, publish the trade and send the fill, plus `also`: one round
        trip, run by Redis in that order.

        The hold covers the worst case, so the charge is the cost at the cleared prices; the
        ledger, trade and fill say so without waiting for the budget's answer. Only if Redis
        had lost the hold (it outlives the request's deadline) would the budget not be charged:
        that is logged, and the ledger still records the trade, which the provider did serve.

        Returns the amount charged to the budget and the replies of `also`.
        """
        offer, now = ticket.candidate.offer, self._clock_ms()
        entry = Settlement(
            clearing_id=pos.clearing_id,
            key_id=pos.key.key_id,
            provider=offer.provider,
            offer_id=offer.offer_id,
            model=offer.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cost=cost,
            prices=Prices(offer.input_price, offer.output_price, offer.cached_input_price),
            ts=now,
        )
        trade = Trade(
            model=offer.model,
            provider=offer.provider,
            offer_id=offer.offer_id,
            input_price=offer.input_price,
            output_price=offer.output_price,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=cost,
            ts=now,
        )
        k, used = self._keys, usage.input_tokens + usage.output_tokens
        replies = await self._run(
            hold_settle_command(k, pos.key.key_id, ticket.hold.hold_id, cost),
            settle_command(k, offer, ticket.reservation_id, used),
            ledger_append_command(k, entry),
            trade_publish_command(k, trade),
            command("PUBLISH", k.fills_channel(offer.provider), fill_message(entry)),
            *also,
        )
        settled = cast(list[object], replies[0])
        status, charged = text(settled[0]), int(cast(int, settled[1]))
        if status != "settled" or charged != cost:
            log.error(
                "settlement %s: the budget said %s and charged %d nano-USD of %d",
                pos.clearing_id, status, charged, cost,
            )  # fmt: skip
        if pos.hold == ticket.hold:
            pos.hold = None
        return Nanos(charged), replies[5:]


def _refusal(
    limit: int | None, first: object, held: list[object] | None, amount: int, key: KeyRecord
) -> RateLimited | BudgetExceeded | InvalidApiKey | None:
    """What refused a take's batch, if anything: the rate limit first, then the budget."""
    if limit is not None:
        allowed, retry = cast(list[int], first)
        if not allowed:
            return rate_limited(limit, int(retry))
    if held is None:
        return None
    status = text(held[0])
    if status == "ok":
        return None
    if status in ("no_account", "revoked"):
        return InvalidApiKey("this API key has been revoked")
    spent, in_flight, budget = (int(cast(int, v)) for v in held[1:4])
    return over_budget(amount, key, spent, in_flight, budget)


def fill_message(entry: Settlement) -> str:
    """The bidder's `fill` (interface §3), as JSON text."""
    return json.dumps(
        {
            "type": "fill",
            "offer_id": entry.offer_id,
            "clearing_id": entry.clearing_id,
            "model": entry.model,
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "cost_usd": format_usd(entry.cost),
            "ts": entry.ts,
        },
        separators=(",", ":"),
    )
