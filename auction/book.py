"""The order book in Redis: post, re-quote, withdraw, expire and reserve offers atomically.

Each change is one Lua script (auction/lua/NAME.lua after book_lib.lua) over one model's keys,
all under the hash tag {b:MODEL}. Every change to a model's book is appended to its change
stream, `Keys.book_changes(model)` (XADD MAXLEN ~ maxlen), which replicas and the price feed
follow. An entry's fields, all strings:

    kind       new | changed | withdrawn | cancelled | expired | capacity
    ref        the offer's "provider/offer_id"
    model      the model whose book changed
    n          the model's change number 1, 2, 3... without gaps: a reader that sees a jump has
               missed entries trimmed from the stream, and must reload (`Book.snapshot`)
    ts         Redis time of the change, epoch ms
    offer      (new, changed) the offer's JSON, `auction.offer_codec.offer_to_json` with its seq
    in_flight  (new, capacity) live reservations against the offer
    tokens     (new, capacity) tokens reserved against the offer in the last minute

A withdrawn, cancelled or expired entry carries no offer: the ref names what to drop. A re-quote
that changes nothing adds no entry, and heartbeats (`refresh`) add none. `Book.snapshot(model)`
returns the live book with the `n` and the stream id it is consistent with; reading the stream
after that id follows it without missing or repeating a change.

Time is Redis's TIME inside each script, one clock for every server process; `now_ms` arguments
pin it, for tests only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from auction.book_stream import text, texts
from auction.keys import Keys
from auction.offer_codec import offer_from_json, offer_to_json
from auction.scripts import register
from clearing.types import Offer, OfferLive

log = logging.getLogger(__name__)

ReserveResult = Literal["ok", "gone", "repriced", "no_capacity"]
_SCRIPTS = (
    "upsert",
    "withdraw",
    "refresh",
    "cancel_session",
    "expire",
    "reserve",
    "release",
    "settle",
    "snapshot",
    "in_flight",
)


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """One model's live offers, consistent with change number `version` at `stream_id`."""

    model: str
    version: int
    stream_id: str
    entries: tuple[tuple[Offer, OfferLive], ...]


class Book:
    """The shared order book. Offers given to it are already validated against the catalogue."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, maxlen: int = 100_000, batch: int = 500
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._batch = batch
        self._scripts = {name: register(redis, name, prelude="book_lib") for name in _SCRIPTS}

    @property
    def keys(self) -> Keys:
        return self._keys

    async def _run(
        self, name: str, model: str, args: Sequence[EncodableT], now_ms: int | None
    ) -> object:
        k = self._keys
        script_keys = [
            k.book_index(model),
            k.book_expiry(model),
            k.book_changes(model),
            k.book_version(model),
            k.book_seq(model),
            k.reservations(model),
        ]
        head: list[EncodableT] = [
            "" if now_ms is None else now_ms,
            model,
            self._maxlen,
            k.offer(model, ""),
            k.session_offers(model, ""),
            k.in_flight(model, ""),
            k.tokens_window(model, ""),
            k.tokens_amounts(model, ""),
        ]
        result: object = await self._scripts[name](keys=script_keys, args=[*head, *args])
        return result

    # -- offers -----------------------------------------------------------------------------------
    async def upsert(
        self, session: str, offers: Sequence[Offer], *, now_ms: int | None = None
    ) -> dict[str, int]:
        """Post or re-quote `offers` for `session`; returns each ref's seq (time priority).

        A new offer, or one whose prices changed, gets a new seq; otherwise it keeps its own.
        Each offer lives `ttl_ms` from now. An offer id the provider posted for another model
        before is withdrawn from that model's book first.
        """
        await self._relocate(offers, now_ms)
        seqs: dict[str, int] = {}
        for model, group in _by_model(offers).items():
            args: list[EncodableT] = [session]
            for offer in group:
                args.extend(_upsert_args(offer))
            result = await self._run("upsert", model, args, now_ms)
            seqs.update(zip((o.ref for o in group), (int(s) for s in texts(result)), strict=True))
        return seqs

    async def _relocate(self, offers: Sequence[Offer], now_ms: int | None) -> None:
        # The provider's offer-id -> model index is written before the offer itself, so an offer
        # in a book can always be found by a withdraw; a stale entry only finds nothing.
        for provider, group in _by_provider(offers).items():
            key = self._keys.provider_offers(provider)
            before = await self._redis.hmget(key, [o.offer_id for o in group])
            updates: dict[FieldT, EncodableT] = {}
            moved: dict[str, list[str]] = {}
            for offer, old in zip(group, before, strict=True):
                old_model = None if old is None else text(old)
                if old_model != offer.model:
                    updates[offer.offer_id] = offer.model
                    if old_model is not None:
                        moved.setdefault(old_model, []).append(offer.ref)
            for model, refs in moved.items():
                await self._run("withdraw", model, refs, now_ms)
            if updates:
                await self._redis.hset(key, mapping=updates)

    async def withdraw(
        self, provider: str, offer_ids: Sequence[str], *, now_ms: int | None = None
    ) -> list[str]:
        """Withdraw the provider's offers by id; returns the refs withdrawn (unknown ids: none)."""
        if not offer_ids:
            return []
        models = await self._redis.hmget(self._keys.provider_offers(provider), list(offer_ids))
        by_model: dict[str, list[str]] = {}
        for offer_id, model in zip(offer_ids, models, strict=True):
            if model is not None:
                by_model.setdefault(text(model), []).append(f"{provider}/{offer_id}")
        withdrawn: list[str] = []
        for model, refs in by_model.items():
            withdrawn.extend(texts(await self._run("withdraw", model, refs, now_ms)))
        return withdrawn

    async def refresh(
        self, session: str, models: Iterable[str], *, now_ms: int | None = None
    ) -> int:
        """Heartbeat: each live offer the session owns lives its own ttl_ms from now.

        Returns how many offers were extended.
        """
        total = 0
        for model in models:
            total += int(cast(int, await self._run("refresh", model, [session], now_ms)))
        return total

    async def cancel_session(
        self, session: str, models: Iterable[str], *, now_ms: int | None = None
    ) -> list[str]:
        """Cancel on disconnect: remove the offers the session still owns; returns their refs."""
        cancelled: list[str] = []
        for model in models:
            cancelled.extend(texts(await self._run("cancel_session", model, [session], now_ms)))
        return cancelled

    async def expire(self, models: Iterable[str], *, now_ms: int | None = None) -> list[str]:
        """Remove offers whose ttl passed and free reservations whose ttl passed.

        Returns the refs removed. Safe to run in every process at once.
        """
        expired: list[str] = []
        for model in models:
            more = True
            while more:
                removed, flag = cast(
                    list[object], await self._run("expire", model, [self._batch], now_ms)
                )
                expired.extend(texts(removed))
                more = int(cast(int, flag)) == 1
        return expired

    # -- capacity ---------------------------------------------------------------------------------
    async def reserve(
        self,
        offer: Offer,
        reservation_id: str,
        ttl_ms: int,
        tokens: int = 0,
        *,
        now_ms: int | None = None,
    ) -> ReserveResult:
        """Take one unit of the offer's capacity for `ttl_ms`, atomically.

        "ok" if the offer is live at exactly `offer`'s prices, fewer than `concurrency`
        reservations are live, and (when it has a tokens-per-minute limit) the tokens reserved
        in the last minute plus `tokens` fit it. Otherwise "gone" (withdrawn, cancelled or
        expired), "repriced", or "no_capacity". Repeating an "ok" reservation id is "ok".
        """
        if not reservation_id:
            raise ValueError("reservation_id must not be empty")
        args: list[EncodableT] = [
            offer.ref,
            reservation_id,
            ttl_ms,
            tokens,
            offer.input_price,
            offer.output_price,
            offer.cached_input_price,
        ]
        result = cast(list[object], await self._run("reserve", offer.model, args, now_ms))
        return cast(ReserveResult, text(result[0]))

    async def release(
        self, model: str, ref: str, reservation_id: str, *, now_ms: int | None = None
    ) -> bool:
        """Give a reservation back unused; False if it was already released, settled or expired."""
        result = await self._run("release", model, [ref, reservation_id], now_ms)
        return int(cast(int, result)) == 1

    async def settle(
        self,
        model: str,
        ref: str,
        reservation_id: str,
        tokens_used: int,
        *,
        now_ms: int | None = None,
    ) -> bool:
        """Free the reservation's unit and count the tokens it used in the per-minute window.

        Returns True if the unit was held until now; a repeated call changes nothing.
        """
        result = await self._run("settle", model, [ref, reservation_id, tokens_used], now_ms)
        return int(cast(int, result)) == 1

    async def in_flight(self, model: str, ref: str, *, now_ms: int | None = None) -> int:
        """Live reservations against the offer."""
        return int(cast(int, await self._run("in_flight", model, [ref], now_ms)))

    # -- reading ----------------------------------------------------------------------------------
    async def snapshot(self, model: str, *, now_ms: int | None = None) -> ModelSnapshot:
        """The model's live offers with their live state, and where its stream stood."""
        raw = cast(list[object], await self._run("snapshot", model, [], now_ms))
        entries: list[tuple[Offer, OfferLive]] = []
        for i in range(2, len(raw), 5):
            record = json.loads(text(raw[i + 1]))
            record["seq"] = int(text(raw[i + 2]))
            live = OfferLive(
                in_flight=int(cast(int, raw[i + 3])), tokens_this_minute=int(text(raw[i + 4]))
            )
            entries.append((offer_from_json(record), live))
        return ModelSnapshot(model, int(text(raw[0])), text(raw[1]), tuple(entries))

    async def load(
        self, models: Iterable[str], *, now_ms: int | None = None
    ) -> list[tuple[Offer, OfferLive]]:
        """Every live offer of `models`, with its live state."""
        out: list[tuple[Offer, OfferLive]] = []
        for model in models:
            out.extend((await self.snapshot(model, now_ms=now_ms)).entries)
        return out


async def sweep_forever(book: Book, models: Sequence[str], interval_s: float = 1.0) -> None:
    """Expire offers and reservations every `interval_s` until cancelled.

    Every server process may run one: each sweep is atomic per model, and a second finds
    nothing the first removed. A Redis error is logged and the next round tries again.
    """
    while True:
        try:
            await book.expire(models)
        except RedisError:
            log.warning("book sweep failed; retrying in %.1f s", interval_s, exc_info=True)
        await asyncio.sleep(interval_s)


def _upsert_args(offer: Offer) -> list[EncodableT]:
    body = offer_to_json(offer)
    del body["seq"]  # the script splices in the seq it assigns
    return [
        offer.ref,
        json.dumps(body, separators=(",", ":")),
        offer.input_price,
        offer.output_price,
        offer.cached_input_price,
        offer.concurrency,
        "" if offer.tokens_per_minute is None else offer.tokens_per_minute,
        offer.ttl_ms,
    ]


def _by_model(offers: Iterable[Offer]) -> dict[str, list[Offer]]:
    groups: dict[str, list[Offer]] = {}
    for offer in offers:
        groups.setdefault(offer.model, []).append(offer)
    return groups


def _by_provider(offers: Iterable[Offer]) -> dict[str, list[Offer]]:
    groups: dict[str, list[Offer]] = {}
    for offer in offers:
        groups.setdefault(offer.provider, []).append(offer)
    return groups
