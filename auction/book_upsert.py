"""The book's bidder write path: where each offer id lives, and an upsert packed for the wire.

Bidders re-quote the same offers many times a second, so this path avoids repeated work:

- `Placements` remembers the model this process last put each offer id in. The provider's
  offer-id -> model index (`Keys.provider_offers`) must be read before an upsert only when an
  offer may have moved to another model; for the others `Book.upsert` reads it in the same
  round trip as the upserts, and `moves` finds what another process changed meanwhile.
- `UpsertPacker` writes the upsert script's EVALSHA in RESP directly: its head is the same for
  every call on a model, and each offer's eight arguments go out in one format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from auction.book_commands import BOOK_LIB
from auction.book_stream import text
from auction.commands import Cmd, command
from auction.keys import Keys
from auction.resp import Arg, pack_args
from clearing.types import Offer

PLACED_MAX = 100_000  # offer ids whose model a Book remembers


class Placements:
    """(provider, offer_id) -> the model this process last put the offer in; bounded."""

    def __init__(self, max_entries: int = PLACED_MAX) -> None:
        self._max = max_entries
        self._models: dict[tuple[str, str], str] = {}

    def known(self, offer: Offer) -> bool:
        """True when this process last put the offer id in the offer's model."""
        return self._models.get((offer.provider, offer.offer_id)) == offer.model

    def put(self, offer: Offer) -> None:
        key = (offer.provider, offer.offer_id)
        if self._models.get(key) != offer.model:
            self._models.pop(key, None)
            self._models[key] = offer.model
            if len(self._models) > self._max:
                del self._models[next(iter(self._models))]


def moves(
    keys: Keys,
    groups: dict[str, list[Offer]],
    before: Sequence[Sequence[object]],
    placements: Placements,
) -> tuple[list[Cmd], dict[str, list[str]]]:
    """The index updates, and the refs to withdraw by model, for offers whose model changed.

    `groups` are offers by provider; `before` the index's models for each group's offer ids
    (HMGET replies). Every offer is noted in `placements` as put in its model.
    """
    updates: list[Cmd] = []
    moved: dict[str, list[str]] = {}
    for (provider, group), models in zip(groups.items(), before, strict=True):
        changed: list[Arg] = []
        for offer, old in zip(group, models, strict=True):
            old_model = None if old is None else text(old)
            if old_model != offer.model:
                changed += [offer.offer_id, offer.model]
                if old_model is not None:
                    moved.setdefault(old_model, []).append(offer.ref)
            placements.put(offer)
        if changed:
            updates.append(command("HSET", keys.provider_offers(provider), *changed))
    return updates, moved


def upsert_args(offer: Offer, body: str) -> list[Arg]:
    """One offer's arguments to upsert.lua (`body`: its JSON without the seq)."""
    return [
        offer.ref,
        body,
        offer.input_price,
        offer.output_price,
        offer.cached_input_price,
        offer.concurrency,
        "" if offer.tokens_per_minute is None else offer.tokens_per_minute,
        offer.ttl_ms,
    ]


class UpsertPacker:
    """`script("upsert", keys, args, prelude="book_lib", fixed=head)` for the lean client.

    Every quote packs eight arguments per offer: one format per offer costs a third of
    `pack_args` over them. The EVALSHA up to the session is packed once per model.
    """

    def __init__(self, sha: str, body: Callable[[Offer], str]) -> None:
        self._sha = sha
        self._body = body
        self._starts: dict[str, tuple[tuple[Arg, ...], bytes]] = {}

    def command(
        self,
        model: str,
        layout: Callable[[], tuple[list[str], list[Arg]]],
        session: str,
        group: Sequence[Offer],
    ) -> Cmd:
        """The upsert of `group` (offers of `model`) for `session`; `layout` gives KEYS, head."""
        start = self._starts.get(model)
        if start is None:
            script_keys, head = layout()
            start_args: tuple[Arg, ...] = ("EVALSHA", self._sha, len(script_keys))
            start_args += (*script_keys, *head)
            start = self._starts[model] = start_args, pack_args(start_args)
        start_args, start_packed = start
        args: list[Arg] = [session]
        resp = [f"${len(session)}\r\n{session}\r\n"]
        for offer in group:
            ref, body = offer.ref, self._body(offer)
            pin, pout = str(offer.input_price), str(offer.output_price)
            pcached, conc = str(offer.cached_input_price), str(offer.concurrency)
            tpm = "" if offer.tokens_per_minute is None else str(offer.tokens_per_minute)
            ttl = str(offer.ttl_ms)
            resp.append(
                f"${len(ref)}\r\n{ref}\r\n${len(body)}\r\n{body}\r\n${len(pin)}\r\n{pin}\r\n"
                f"${len(pout)}\r\n{pout}\r\n${len(pcached)}\r\n{pcached}\r\n"
                f"${len(conc)}\r\n{conc}\r\n${len(tpm)}\r\n{tpm}\r\n${len(ttl)}\r\n{ttl}\r\n"
            )
            args += (ref, body, pin, pout, pcached, conc, tpm, ttl)
        tail = "".join(resp)
        # A `$len` is a byte length: right for ASCII text; anything else is packed the long way.
        packed_args = tail.encode() if tail.isascii() else pack_args(args)
        every = (*start_args, *args)
        return Cmd(
            every, b"*%d\r\n" % len(every) + start_packed + packed_args, ("upsert", BOOK_LIB)
        )
