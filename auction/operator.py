"""The operator's actions behind the admin API: client keys and provider registrations."""

from __future__ import annotations

import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.api_keys import KeyRecord
from auction.book import Book
from auction.book_stream import text
from auction.budgets import Period
from auction.errors import InvalidRequest, NotFound
from auction.keys import Keys
from auction.providers import Providers
from clearing.money import MoneyError, Nanos, format_usd, parse_usd
from clearing.types import ApiName


def usd(value: str | int | float, param: str) -> Nanos:
    """A dollar amount from a request, or InvalidRequest naming the field."""
    try:
        return parse_usd(value)
    except MoneyError as exc:
        raise InvalidRequest(f"{param} {exc}", param=param) from None


def key_json(record: KeyRecord) -> dict[str, object]:
    return {
        "name": record.name,
        "budget_usd": format_usd(record.budget),
        "period": record.period,
        "revoked": record.revoked,
        "created_ms": record.created_ms,
    }


class Operator:
    """Admin actions, each answering the JSON the admin API returns."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        accounts: Accounts,
        providers: Providers,
        book: Book,
    ) -> None:
        self._redis = redis
        self._accounts = accounts
        self._providers = providers
        self._book = book
        self._keys = keys

    async def create_key(
        self, name: str, budget_usd: str | int | float, period: Period
    ) -> dict[str, object]:
        record, token = await self._accounts.create_key(name, usd(budget_usd, "budget_usd"), period)
        return {**key_json(record), "api_key": token}

    async def list_keys(self) -> dict[str, object]:
        """Every key with what it has spent and holds this period."""
        rows = []
        for record in await self._accounts.list_keys():
            snap = await self._accounts.account(record.key_id)
            rows.append(
                {
                    **key_json(record),
                    "spent_usd": format_usd(snap.spent),
                    "held_usd": format_usd(snap.held),
                    "remaining_usd": format_usd(snap.remaining),
                }
            )
        return {"object": "list", "data": rows}

    async def revoke_key(self, name: str) -> dict[str, object]:
        return key_json(await self._accounts.revoke(name))

    async def set_budget(
        self, name: str, budget_usd: str | int | float, period: Period | None
    ) -> dict[str, object]:
        return key_json(
            await self._accounts.set_budget(name, usd(budget_usd, "budget_usd"), period)
        )

    async def add_provider(
        self, name: str, api: ApiName, base_url: str, api_key: str | None
    ) -> dict[str, object]:
        record, token = await self._providers.add(name, api, base_url, api_key)
        return {**record.describe(), "bidder_token": token}

    async def list_providers(self) -> dict[str, object]:
        return {"object": "list", "data": [r.describe() for r in await self._providers.list()]}

    async def remove_provider(self, name: str) -> dict[str, object]:
        """Remove the registration (its bidder sessions close), then withdraw its offers.

        Raises:
            NotFound: no such provider, and no offers of that name in the book.
        """
        removed = await self._providers.remove(name)
        ids = await self._redis.hkeys(self._keys.provider_offers(name))
        withdrawn = await self._book.withdraw(name, [text(i) for i in ids])
        if not removed and not withdrawn:
            raise NotFound(f"no provider named {name!r}")
        return {"provider": name, "removed": removed, "offers_withdrawn": len(withdrawn)}
