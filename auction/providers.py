"""The provider registry: who sells, the API they speak, where to call them, and bidder tokens."""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from auction.api_keys import token_hash
from auction.errors import InvalidApiKey, InvalidRequest, NotFound
from auction.keys import Keys
from auction.scripts import register
from clearing.types import API_NAMES, ApiName

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bt-"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_URL = 2048
MAX_API_KEY = 8192


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """A registration as anyone may see it: the upstream credential shows only as a flag."""

    name: str
    api: ApiName
    base_url: str
    api_key_set: bool
    created_ms: int

    def describe(self) -> dict[str, object]:
        """The JSON an admin listing shows."""
        return {
            "provider": self.name,
            "api": self.api,
            "base_url": self.base_url,
            "api_key_set": self.api_key_set,
            "created_ms": self.created_ms,
        }


def _record(raw: bytes | str) -> ProviderRecord:
    data = json.loads(raw)
    return ProviderRecord(
        name=data["name"],
        api=data["api"],
        base_url=data["base_url"],
        api_key_set=bool(data.get("api_key")),
        created_ms=int(data["created_ms"]),
    )


def check_registration(name: str, api: str, base_url: str, api_key: str | None) -> str:
    """Validate a registration and return the base URL without a trailing slash.

    Raises:
        InvalidRequest: naming the first field that is wrong.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            "a provider name is 1-64 of a-z, 0-9, '_', '.' or '-', starting with a-z or 0-9",
            param="name",
        )
    if api not in API_NAMES:
        raise InvalidRequest(f"api must be one of {', '.join(sorted(API_NAMES))}", param="api")
    if not isinstance(base_url, str) or len(base_url) > MAX_URL or not base_url.isprintable():
        raise InvalidRequest("base_url must be an http(s) URL", param="base_url")
    parts = urlsplit(base_url.strip())
    # Credentials in the URL would show in every listing; the api_key field is the place for them.
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise InvalidRequest(
            "base_url must be an http(s) URL with a host and no user info", param="base_url"
        )
    if parts.query or parts.fragment or " " in base_url.strip():
        raise InvalidRequest("base_url must not have a query, fragment or spaces", param="base_url")
    if api_key is not None and (
        not isinstance(api_key, str) or len(api_key) > MAX_API_KEY or not api_key.isprintable()
    ):
        raise InvalidRequest("api_key must be a printable string", param="api_key")
    return base_url.strip().rstrip("/")


class Providers:
    """Provider registrations in one Redis hash, and an index from bidder-token hash to name.

    Bidder tokens are stored only as SHA-256 hashes. The upstream api_key stays in Redis and
    leaves this class only through `credentials`, for the forwarder.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._add = register(redis, "provider_add")
        self._remove = register(redis, "provider_remove")
        self._rotate = register(redis, "provider_rotate")

    async def add(
        self, name: str, api: ApiName, base_url: str, api_key: str | None = None
    ) -> tuple[ProviderRecord, str]:
        """Register a provider. Returns its record and its bidder token (shown once).

        Raises:
            InvalidRequest: a bad field, or the name is taken.
        """
        base_url = check_registration(name, api, base_url, api_key)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        secs, micros = await self._redis.time()
        digest = token_hash(token)
        data = {
            "name": name,
            "api": api,
            "base_url": base_url,
            "api_key": api_key or None,
            "token_hash": digest,
            "created_ms": secs * 1000 + micros // 1000,
        }
        text = json.dumps(data)
        added = await self._add(
            keys=[self._keys.providers(), self._keys.provider_tokens()],
            args=[name, text, digest],
        )
        if not added:
            raise InvalidRequest(f"a provider named {name!r} already exists", param="name")
        log.info("provider registered: %s (%s, %s)", name, api, base_url)
        return _record(text), token

    async def authenticate(self, token: str | None) -> ProviderRecord:
        """The provider a bidder token belongs to.

        Raises:
            InvalidApiKey: no token, or not a current bidder token.
        """
        if not token or not token.startswith(TOKEN_PREFIX):
            raise InvalidApiKey("missing or malformed bidder token")
        digest = token_hash(token)
        name = await self._redis.hget(self._keys.provider_tokens(), digest)
        raw = await self._redis.hget(self._keys.providers(), name) if name is not None else None
        stored = str(json.loads(raw).get("token_hash") or "") if raw is not None else ""
        if raw is None or not hmac.compare_digest(stored, digest):
            raise InvalidApiKey("unknown bidder token")
        return _record(raw)

    async def get(self, name: str) -> ProviderRecord | None:
        """The provider with this name, or None."""
        raw = await self._redis.hget(self._keys.providers(), name)
        return _record(raw) if raw is not None else None

    async def list(self) -> list[ProviderRecord]:
        """Every registered provider, by name (never their credentials)."""
        rows = await self._redis.hvals(self._keys.providers())
        return sorted((_record(raw) for raw in rows), key=lambda r: r.name)

    async def remove(self, name: str) -> bool:
        """Remove a provider and its bidder token; False if there was none.

        Publishes {"type": "provider_removed", "provider": name} on the control channel so every
        process closes the provider's bidder sessions. Withdrawing its offers from the book is
        the caller's job.
        """
        removed = await self._remove(
            keys=[self._keys.providers(), self._keys.provider_tokens()], args=[name]
        )
        if not removed:
            return False
        event = {"type": "provider_removed", "provider": name}
        await self._redis.publish(self._keys.control_channel(), json.dumps(event))
        log.info("provider removed: %s", name)
        return True

    async def credentials(self, name: str) -> tuple[str, str | None]:
        """(base_url, api_key) to call the provider with; for the forwarder only.

        Raises:
            NotFound: no such provider (it may have been removed meanwhile).
        """
        raw = await self._redis.hget(self._keys.providers(), name)
        if raw is None:
            raise NotFound(f"no provider named {name!r}")
        data = json.loads(raw)
        return str(data["base_url"]), cast(str | None, data.get("api_key"))

    async def rotate_token(self, name: str) -> str:
        """Issue a new bidder token; the old one stops working at once.

        Publishes {"type": "provider_token_rotated", "provider": name} on the control channel;
        sessions opened with the old token may be closed by whoever listens.

        Raises:
            NotFound: no such provider.
        """
        for _ in range(10):  # a concurrent rotation changed it: read again, bounded
            raw = await self._redis.hget(self._keys.providers(), name)
            if raw is None:
                raise NotFound(f"no provider named {name!r}")
            data = json.loads(raw)
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            old, data["token_hash"] = data["token_hash"], token_hash(token)
            done = await self._rotate(
                keys=[self._keys.providers(), self._keys.provider_tokens()],
                args=[name, old, data["token_hash"], json.dumps(data)],
            )
            if done == 1:
                event = {"type": "provider_token_rotated", "provider": name}
                await self._redis.publish(self._keys.control_channel(), json.dumps(event))
                log.info("bidder token rotated: %s", name)
                return token
            if done == 0:
                raise NotFound(f"no provider named {name!r}")
        raise InvalidRequest(f"provider {name!r} keeps changing; try again", param="name")
