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
from functools import partial
from typing import Literal, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT

from auction.book_commands import BOOK_LIB, BOOK_MAXLEN, layout
from auction.book_stream import text, texts
from auction.book_upsert import Placements, UpsertPacker, moves, upsert_args
from auction.commands import Cmd, Runner, command, script, send_one
from auction.keys import Keys
from auction.offer_codec import OfferCodec, offer_from_json
from auction.resp import Arg, RespError
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
    """The shared order book. Offers given to it are already validated against the catalogue.

    With a `runner` (the lean RESP client, `auction.commands.Runner`), the bidders' hot path
    (upsert, refresh, withdraw, cancel) sends the scripts of all the models it touches in one
    round trip; without one, or with `now_ms` pinned, each goes through redis-py on its own.
    `aclose()` closes the runner's connection. The `codec` encodes the offers it writes (the
    process's replica should share it: it then decodes them without parsing).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        maxlen: int = BOOK_MAXLEN,
        batch: int = 500,
        runner: Runner | None = None,
        codec: OfferCodec | None = None,
    ) -> None:
        self._redis = redis
        self.codec = codec or OfferCodec()
        self._keys = keys
        self._maxlen = maxlen
        self._batch = batch
        self._runner = runner
        self._scripts = {name: register(redis, name, prelude=BOOK_LIB) for name in _SCRIPTS}
        self._packer = UpsertPacker(self._scripts["upsert"].sha, self.codec.body)
        self._placements = Placements()

    @property
    def keys(self) -> Keys:
        return self._keys

    async def aclose(self) -> None:
        """Close the runner's connection, if the book has one."""
        if self._runner is not None:
            await self._runner.aclose()

    def _layout(self, model: str, now_ms: int | None) -> tuple[list[str], list[Arg]]:
        return layout(self._keys, model, now_ms, self._maxlen)

    async def _run(
        self, name: str, model: str, args: Sequence[EncodableT], now_ms: int | None
    ) -> object:
        script_keys, head = self._layout(model, now_ms)
        result: object = await self._scripts[name](keys=script_keys, args=[*head, *args])
        return result

    async def _run_all(
        self, calls: Sequence[tuple[str, str, Sequence[Arg]]], now_ms: int | None, *first: Cmd
    ) -> list[object]:
        """Run (script, model, args) calls, after the commands `first`; their replies in order.

        One round trip on the runner; else one call at a time. Errors are redis-py's either way.
        """
        if self._runner is None or now_ms is not None:
            for cmd in first:
                await send_one(self._redis, cmd)
            return [await self._run(name, model, args, now_ms) for name, model, args in calls]
        batch = list(first)
        for name, model, args in calls:
            script_keys, head = self._layout(model, None)
            batch.append(script(name, script_keys, args, prelude=BOOK_LIB, fixed=tuple(head)))
        if not batch:
            return []  # an empty batch would wait for replies that never come
        return (await self._lean(batch))[len(first) :]

    async def _lean(self, batch: Sequence[Cmd]) -> list[object]:
        assert self._runner is not None
        try:
            replies = await self._runner.run(*batch)
        except OSError as exc:  # the lean client's ConnectionError
            raise RedisConnectionError(str(exc)) from exc
        for reply in replies:
            if isinstance(reply, RespError):
                raise ResponseError(str(reply))
        return replies

    async def _hmget(self, key: str, fields: Sequence[str]) -> list[object]:
        if self._runner is None:
            return list(await self._redis.hmget(key, list(fields)))
        [reply] = await self._lean([command("HMGET", key, *fields)])
        return cast(list[object], reply)

    # -- offers -----------------------------------------------------------------------------------
    async def upsert(
        self, session: str, offers: Sequence[Offer], *, now_ms: int | None = None
    ) -> dict[str, int]:
        """Post or re-quote `offers` for `session`; returns each ref's seq (time priority).

        A new offer, or one whose prices changed, gets a new seq; otherwise it keeps its own.
        Each offer lives `ttl_ms` from now. An offer id the provider posted for another model
        before is withdrawn from that model's book first.
        """
        lean = self._runner is not None and now_ms is None
        # An offer this process last put in the same model's book needs no look-up first: the
        # index is read in the same round trip as the upserts and checked after (`_recheck`).
        known = [o for o in offers if self._placements.known(o)] if lean else []
        fresh = [o for o in offers if not self._placements.known(o)] if known else offers
        index_updates = await self._relocate(fresh, now_ms)
        groups = _by_model(offers)
        # The provider's offer-id -> model index is written before the offers themselves (first
        # in the same batch), so an offer in a book can always be found by a withdraw; a stale
        # entry only finds nothing.
        if lean:
            known_groups = _by_provider(known)
            checks = [
                command("HMGET", self._keys.provider_offers(p), *(o.offer_id for o in group))
                for p, group in known_groups.items()
            ]
            cmds = [
                self._packer.command(model, partial(self._layout, model, None), session, group)
                for model, group in groups.items()
            ]
            replies = await self._lean([*index_updates, *checks, *cmds])
            first = len(index_updates) + len(checks)
            await self._recheck(known_groups, replies[len(index_updates) : first])
            replies = replies[first:]
        else:
            calls: list[tuple[str, str, Sequence[Arg]]] = []
            for model, group in groups.items():
                args: list[Arg] = [session]
                for offer in group:
                    args.extend(upsert_args(offer, self.codec.body(offer)))
                calls.append(("upsert", model, args))
            replies = await self._run_all(calls, now_ms, *index_updates)
        seqs: dict[str, int] = {}
        for group, result in zip(groups.values(), replies, strict=True):
            seqs.update(zip((o.ref for o in group), (int(s) for s in texts(result)), strict=True))
        return seqs

    async def _relocate(self, offers: Sequence[Offer], now_ms: int | None) -> list[Cmd]:
        """Withdraw offers that moved to another model; returns the index updates to make."""
        groups = _by_provider(offers)
        before = [
            await self._hmget(self._keys.provider_offers(p), [o.offer_id for o in group])
            for p, group in groups.items()
        ]
        updates, moved = moves(self._keys, groups, before, self._placements)
        if moved:
            await self._run_all([("withdraw", m, refs) for m, refs in moved.items()], now_ms)
        return updates

    async def _recheck(self, groups: dict[str, list[Offer]], before: Sequence[object]) -> None:
        """After upserts sent without a look-up: repair offers another process moved meanwhile.

        The index said where this process last put them; if another process has since posted
        the same offer id for another model, that book's copy is withdrawn now (a round trip
        after the upsert, where a look-up first would have withdrawn it just before).
        """
        lists = [cast(list[object], b) for b in before]
        updates, moved = moves(self._keys, groups, lists, self._placements)
        if updates or moved:
            await self._run_all(
                [("withdraw", m, refs) for m, refs in moved.items()], None, *updates
            )

    async def withdraw(
        self, provider: str, offer_ids: Sequence[str], *, now_ms: int | None = None
    ) -> list[str]:
        """Withdraw the provider's offers by id; returns the refs withdrawn (unknown ids: none)."""
        if not offer_ids:
            return []
        models = await self._hmget(self._keys.provider_offers(provider), offer_ids)
        by_model: dict[str, list[str]] = {}
        for offer_id, model in zip(offer_ids, models, strict=True):
            if model is not None:
                by_model.setdefault(text(model), []).append(f"{provider}/{offer_id}")
        replies = await self._run_all([("withdraw", m, r) for m, r in by_model.items()], now_ms)
        return [ref for reply in replies for ref in texts(reply)]

    async def refresh(
        self, session: str, models: Iterable[str], *, now_ms: int | None = None
    ) -> int:
        """Heartbeat: each live offer the session owns lives its own ttl_ms from now.

        Returns how many offers were extended.
        """
        replies = await self._run_all([("refresh", m, [session]) for m in models], now_ms)
        return sum(int(cast(int, reply)) for reply in replies)

    async def cancel_session(
        self, session: str, models: Iterable[str], *, now_ms: int | None = None
    ) -> list[str]:
        """Cancel on disconnect: remove the offers the session still owns; returns their refs."""
        calls = [("cancel_session", m, [session]) for m in models]
        replies = await self._run_all(calls, now_ms)
        return [ref for reply in replies for ref in texts(reply)]

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
