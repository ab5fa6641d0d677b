"""The book scripts' calling convention, and the commands the request path batches.

Every script of a model's book (`auction/lua/*.lua` with the `book_lib` prelude) takes the same
six KEYS, all in the model's slot `{b:MODEL}`, and starts its ARGV with the same eight values
(`layout`); its own arguments follow. `Book` sends them one at a time or in batches; the
request path batches `reserve_command`, `release_command` and `settle_command` with the other
owners' commands (`auction.settlement`).
"""

from __future__ import annotations

from collections.abc import Sequence

from auction.commands import Cmd, Script
from auction.keys import Keys
from auction.resp import Arg
from clearing.types import Offer

BOOK_MAXLEN = 100_000  # the change stream's default length (XADD MAXLEN ~)
BOOK_LIB = "book_lib"  # the prelude of every book script
RESERVE = Script("reserve", BOOK_LIB)
RELEASE = Script("release", BOOK_LIB)
SETTLE = Script("settle", BOOK_LIB)


def layout(
    keys: Keys, model: str, now_ms: int | None, maxlen: int = BOOK_MAXLEN
) -> tuple[list[str], list[Arg]]:
    """The KEYS of a model's book scripts, and the ARGV every one of them starts with."""
    script_keys = [
        keys.book_index(model),
        keys.book_expiry(model),
        keys.book_changes(model),
        keys.book_version(model),
        keys.book_seq(model),
        keys.reservations(model),
    ]
    head: list[Arg] = [
        "" if now_ms is None else now_ms,
        model,
        maxlen,
        keys.offer(model, ""),
        keys.session_offers(model, ""),
        keys.in_flight(model, ""),
        keys.tokens_window(model, ""),
        keys.tokens_amounts(model, ""),
    ]
    return script_keys, head


def book_command(keys: Keys, which: Script, model: str, args: Sequence[Arg]) -> Cmd:
    """Book script `which` on `model` with its own `args`, on Redis time."""
    script_keys, head = layout(keys, model, None)
    return which.command(script_keys, args, fixed=tuple(head))


def reserve_command(keys: Keys, offer: Offer, rid: str, ttl_ms: int, tokens: int) -> Cmd:
    """Reserve one unit of `offer` (see `Book.reserve`); replies {ok|gone|repriced|no_capacity}."""
    args: list[Arg] = [
        offer.ref, rid, ttl_ms, tokens, offer.input_price, offer.output_price,
        offer.cached_input_price,
    ]  # fmt: skip
    return book_command(keys, RESERVE, offer.model, args)


def release_command(keys: Keys, offer: Offer, rid: str) -> Cmd:
    """Give the reservation back unused (see `Book.release`)."""
    return book_command(keys, RELEASE, offer.model, [offer.ref, rid])


def settle_command(keys: Keys, offer: Offer, rid: str, tokens_used: int) -> Cmd:
    """End the reservation, counting the tokens used (see `Book.settle`)."""
    return book_command(keys, SETTLE, offer.model, [offer.ref, rid, tokens_used])
