"""Who is calling: client API keys (briefly cached) and the operator's admin token."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from pydantic import SecretStr

from auction.accounts import Accounts
from auction.api_keys import KeyRecord
from auction.errors import InvalidApiKey
from auction.ttlcache import TtlCache


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeyCache:
    """`Accounts.authenticate`, remembered for `ttl_s` so most requests skip a Redis round trip.

    Why so short: a revoked key must stop working within a second or two on every process,
    and this is the only place that could keep it alive. Failures are never cached.
    """

    def __init__(
        self,
        accounts: Accounts,
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accounts = accounts
        self._cache: TtlCache[str, KeyRecord] = TtlCache(ttl_s, clock=clock)

    async def authenticate(self, authorization: str | None) -> KeyRecord:
        """The live key named by the header.

        Raises:
            InvalidApiKey: missing, malformed, unknown or revoked.
        """
        token = bearer(authorization)
        if token is None:
            raise InvalidApiKey("missing API key: send 'Authorization: Bearer <api key>'")
        return await self._cache.get(token, lambda: self._accounts.authenticate(token))

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached keys (one key's, or all): a revocation heard on the control channel."""
        if key_id is None:
            self._cache.drop()
        else:
            self._cache.drop(lambda _, record: record.key_id == key_id)


def check_admin(configured: SecretStr | None, authorization: str | None) -> None:
    """Let the operator in, or refuse with a message saying why.

    Raises:
        InvalidApiKey: the admin API is disabled (no token configured), or the token is
            missing or wrong (compared in constant time).
    """
    if configured is None:
        raise InvalidApiKey(
            "the admin API is disabled: start the marketplace with AUCTION_ADMIN_TOKEN set"
        )
    token = bearer(authorization) or ""
    if not hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
        raise InvalidApiKey("missing or wrong admin token")
