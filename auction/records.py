"""Clearing records: what happened to one request, kept for `GET /v1/clearings/{id}`.

A record holds the constraints, the candidates and the offers passed over with their reasons,
the price rule, every attempt (failover included) and its outcome, and the tokens and cost.
It is stored as JSON under `Keys.clearing_record(id)` for `clearing_record_ttl_s`, with the id
of the key that made the request, so that a key reads only its own records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache
from typing import Any, Literal

import redis.asyncio as aioredis

from auction.commands import Cmd, command
from auction.errors import NotFound
from auction.keys import Keys
from bidders import wirejson
from clearing.money import Nanos, PriceMicros, format_price, format_usd
from clearing.types import Candidate, Clearing, PassedOver, Requirements, Usage

MAX_PASSED_LISTED = 200  # a record lists at most this many passed-over offers (all are counted)

AttemptOutcome = Literal[
    "ok",  # the provider answered (a stream: it ended normally)
    "gone",  # the offer left the book between clearing and reserving
    "repriced",  # its prices changed between clearing and reserving
    "no_capacity",  # its capacity was taken between clearing and reserving
    "over_budget",  # a fallback's worst case did not fit the key's remaining budget
    "timeout",  # no (complete) answer in the time given to the attempt
    "unavailable",  # connection refused or reset, HTTP 5xx
    "rate_limited",  # HTTP 429
    "bad_response",  # malformed JSON, empty content, a stream cut short
    "rejected",  # HTTP 4xx: the provider refused the request
    "failed_mid_stream",  # the provider failed after the first byte reached the client
    "client_closed",  # the client went away during the stream
]
Outcome = Literal["pending", "completed", "failed", "client_closed", "rejected"]


@lru_cache(maxsize=4096)
def effective_price(price: PriceMicros, num: int, den: int) -> str:
    """A price scaled by a price rule's ratio, as USD per Mtok (up to 9 decimals, rounded up)."""
    if num == den:
        return format_price(price)
    value = (Decimal(price) * num / den / 1_000_000).quantize(
        Decimal("0.000000001"), rounding=ROUND_CEILING
    )
    return format(value.normalize(), "f")


def candidate_row(c: Candidate) -> list[object]:
    """A candidate as stored: plain numbers, formatted only when read."""
    o = c.offer
    return [o.provider, o.offer_id, o.model, o.input_price, o.output_price, c.ratio_num,
            c.ratio_den, c.worst_case, c.expected]  # fmt: skip


def render_candidate(row: list[Any]) -> dict[str, object]:
    provider, offer_id, model, input_price, output_price, num, den, worst, expected = row
    return {
        "provider": provider,
        "offer_id": offer_id,
        "model": model,
        "input_usd_per_mtok": effective_price(input_price, num, den),
        "output_usd_per_mtok": effective_price(output_price, num, den),
        "ask_input_usd_per_mtok": format_price(input_price),
        "ask_output_usd_per_mtok": format_price(output_price),
        "worst_case_cost_usd": format_usd(worst),
        "estimated_cost_usd": format_usd(expected),
    }


def candidate_json(c: Candidate) -> dict[str, object]:
    """A candidate as the quote and the record show it: its own and its charged prices."""
    return render_candidate(candidate_row(c))


def passed_json(p: PassedOver) -> dict[str, object]:
    provider, _, offer_id = p.ref.partition("/")
    return {"provider": provider, "offer_id": offer_id, "model": p.model, "reason": p.reason}


def requirements_json(req: Requirements) -> dict[str, object]:
    """The constraints a request cleared under (derived ones included)."""
    return {
        "model": req.model,
        "input_tokens_estimate": req.input_tokens,
        "max_tokens": req.max_tokens,
        "min_quality": req.min_quality,
        "max_ttft_ms": req.max_ttft_ms,
        "min_output_tokens_per_s": req.min_output_tokens_per_s,
        "features": sorted(req.features),
        "quantizations": None if req.quantizations is None else sorted(req.quantizations),
        "providers_only": None if req.providers_only is None else sorted(req.providers_only),
        "providers_ignore": sorted(req.providers_ignore),
        "region": req.region,
        "max_cost_usd": None if req.max_cost is None else format_usd(req.max_cost),
    }


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one candidate."""

    provider: str
    offer_id: str
    outcome: AttemptOutcome
    ms: int  # how long the attempt took
    status: int | None = None  # the provider's HTTP status, when it answered one
    message: str | None = None


@dataclass(slots=True)
class ClearingRecord:
    """Built up while a request runs; `to_json` is what the key's owner may read."""

    clearing_id: str
    key_id: str
    created_ms: int
    stream: bool
    clearing: Clearing
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome = "pending"
    served_by: Candidate | None = None
    usage: Usage | None = None
    cost: Nanos | None = None
    error: str | None = None

    def stored(self) -> dict[str, object]:
        """The record as kept in Redis: compact, formatted only when read (`render`)."""
        c, usage = self.clearing, self.usage
        rows = [candidate_row(x) for x in c.ranked]
        served = self.served_by or c.winner
        winner = next((n for n, x in enumerate(c.ranked) if x is served), None)
        return {
            "key_id": self.key_id,
            "id": self.clearing_id,
            "created_ms": self.created_ms,
            "stream": self.stream,
            "rule": c.price_rule,
            "req": requirements_json(c.requirements),
            "cand": rows,
            "win": winner,
            "passed": [[p.ref, p.model, p.reason] for p in c.passed_over[:MAX_PASSED_LISTED]],
            "counts": dict(c.reason_counts),
            "outranked": c.outranked,
            "att": [
                [a.provider, a.offer_id, a.outcome, a.ms, a.status, a.message]
                for a in self.attempts
            ],
            "outcome": self.outcome,
            "error": self.error,
            "usage": None
            if usage is None
            else [
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
                usage.estimated,
            ],
            "cost": self.cost,
        }

    def to_json(self) -> dict[str, object]:
        """What the key's owner reads."""
        return render(self.stored())


def render(data: dict[str, Any]) -> dict[str, object]:
    """The public clearing record from its stored form."""
    rows, win, usage, cost = data["cand"], data["win"], data["usage"], data["cost"]
    passed = [passed_json(PassedOver(ref, model, reason)) for ref, model, reason in data["passed"]]
    attempts = [
        dict(zip(("provider", "offer_id", "outcome", "ms", "status", "message"), a, strict=True))
        for a in data["att"]
    ]
    return {
        "id": data["id"],
        "object": "auction.clearing",
        "created_ms": data["created_ms"],
        "stream": data["stream"],
        "price_rule": data["rule"],
        "constraints": data["req"],
        "winner": None if win is None else render_candidate(rows[win]),
        "candidates": [render_candidate(row) for row in rows],
        "passed_over": passed,
        "passed_over_counts": data["counts"],
        "outranked": data["outranked"],
        "attempts": attempts,
        "outcome": data["outcome"],
        "error": data["error"],
        "input_tokens": None if usage is None else usage[0],
        "output_tokens": None if usage is None else usage[1],
        "cached_input_tokens": None if usage is None else usage[2],
        "usage_estimated": None if usage is None else usage[3],
        "cost_usd": None if cost is None else format_usd(cost),
    }


def record_payload(record: ClearingRecord) -> bytes:
    """The stored JSON (with its owner's key id)."""
    return wirejson.dumps(record.stored())


class Records:
    """Clearing records in Redis, each readable only by the key that made the request."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    def command(self, record: ClearingRecord) -> Cmd:
        """The SET that stores the record (for a batch)."""
        key = self._keys.clearing_record(record.clearing_id)
        return command("SET", key, record_payload(record), "EX", self._ttl_s)

    async def save(self, record: ClearingRecord) -> None:
        key = self._keys.clearing_record(record.clearing_id)
        await self._redis.set(key, record_payload(record), ex=self._ttl_s)

    async def get(self, clearing_id: str, key_id: str) -> dict[str, object]:
        """The record, if it exists and belongs to `key_id`.

        Raises:
            NotFound: no such record, it expired, or another key made the request.
        """
        raw = None
        if 0 < len(clearing_id) <= 100:
            raw = await self._redis.get(self._keys.clearing_record(clearing_id))
        data = json.loads(raw) if raw is not None else None
        if not isinstance(data, dict) or data.get("key_id") != key_id:
            raise NotFound(f"no clearing {clearing_id!r} for this key")
        return render(data)
