"""Client API keys: the record the service sees, the token format and hash, and records in Redis."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import redis.asyncio as aioredis

from auction.book_stream import text
from auction.budgets import Period, check_period
from auction.errors import InvalidRequest, NotFound
from auction.keys import Keys
from clearing.money import Nanos

KEY_PREFIX = "sk-auc-"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def token_hash(token: str) -> str:
    """SHA-256 hex of a token: tokens are high-entropy, so an unsalted fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A client key as the service sees it (never its token or the token's hash)."""

    key_id: str
    name: str
    budget: Nanos
    period: Period
    revoked: bool
    created_ms: int


def key_record(raw: dict[bytes | str, bytes | str]) -> KeyRecord:
    """The record of a stored account hash."""
    row = {text(k): text(v) for k, v in raw.items()}
    return KeyRecord(
        key_id=row["id"],
        name=row["name"],
        budget=Nanos(int(row["budget"])),
        period=check_period(row["period"]),
        revoked=row.get("revoked") == "1",
        created_ms=int(row["created_ms"]),
    )


async def read_key(redis: aioredis.Redis, keys: Keys, key_id: str) -> KeyRecord:
    """The key with this id.

    Raises:
        NotFound: no such key.
    """
    raw = await redis.hgetall(keys.account(key_id))
    if not raw:
        raise NotFound("no such key")
    return key_record(raw)


def check_name(name: str) -> None:
    """Raises InvalidRequest (param "name") unless `name` is a valid key name."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            "a key name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            param="name",
        )
