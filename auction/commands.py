"""Redis commands as data (`Cmd`), so each step of a request is one batch and one round trip.

A script's KEYS and ARGV layout is known only to the module that owns the script, which builds
its `Cmd` (`auction.ratelimit.rate_hit_command`, `auction.holds.hold_command`, ...) and sends
it itself off the hot path (`send_one`, on redis-py). The request path batches the same
commands instead: rate limit + budget hold + capacity reservation go out in one write rather
than three awaited calls.

`Runner.run` sends a batch with `RespClient` and, should Redis have lost a script (a restart or
SCRIPT FLUSH), loads it and re-runs just the commands that found it missing (they did not run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from auction.resp import Arg, RespClient, RespError, pack, pack_args
from auction.scripts import source


@dataclass(frozen=True, slots=True)
class Cmd:
    """One command: its arguments, the same in RESP, and its Lua source if it is an EVALSHA."""

    args: tuple[Arg, ...]
    packed: bytes
    script: tuple[str, str | None] | None = None  # (name, prelude)


def command(*args: Arg) -> Cmd:
    return Cmd(args, pack([args]))


@cache
def _sha(name: str, prelude: str | None = None) -> str:
    return hashlib.sha1(source(name, prelude).encode()).hexdigest()


@lru_cache(maxsize=8192)
def _head(
    name: str, prelude: str | None, keys: tuple[str, ...], fixed: tuple[Arg, ...], more: int
) -> bytes:
    """The RESP of an EVALSHA up to its per-call arguments (same keys: same bytes)."""
    count = 3 + len(keys) + len(fixed) + more
    args: tuple[Arg, ...] = ("EVALSHA", _sha(name, prelude), len(keys), *keys, *fixed)
    return b"*%d\r\n" % count + pack_args(args)


def script(
    name: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    prelude: str | None = None,
    fixed: tuple[Arg, ...] = (),
) -> Cmd:
    """EVALSHA of auction/lua/NAME.lua (after PRELUDE.lua) with ARGV `fixed` + `args`.

    `fixed` are arguments that stay the same for the same keys, so their encoding is cached.
    """
    head = _head(name, prelude, tuple(keys), fixed, len(args))
    every = ("EVALSHA", _sha(name, prelude), len(keys), *keys, *fixed, *args)
    return Cmd(every, head + pack_args(args), (name, prelude))


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script the request path runs by EVALSHA: auction/lua/NAME.lua, after PRELUDE.lua.

    Each owner names its scripts once as constants (`auction.ratelimit.RATE_HIT`, ...), builds
    its commands with them, and the broker loads the same constants at start.
    """

    name: str
    prelude: str | None = None

    def command(self, keys: Sequence[str], args: Sequence[Arg], fixed: tuple[Arg, ...] = ()) -> Cmd:
        """`script(name, keys, args, prelude, fixed)`."""
        return script(self.name, keys, args, self.prelude, fixed)

    def source(self) -> str:
        return source(self.name, self.prelude)


class Runner:
    """Sends batches; re-runs commands whose script Redis did not have (see the docstring)."""

    def __init__(self, resp: RespClient, redis: aioredis.Redis) -> None:
        self._resp = resp
        self._redis = redis

    async def run(self, *batch: Cmd) -> list[object]:
        replies = await self._resp.execute_packed(b"".join(c.packed for c in batch), len(batch))
        for at, (cmd, reply) in enumerate(zip(batch, replies, strict=True)):
            if isinstance(reply, RespError) and str(reply).startswith("NOSCRIPT"):
                assert cmd.script is not None
                await self._redis.script_load(source(*cmd.script))
                replies[at] = (await self._resp.execute_packed(cmd.packed, 1))[0]
        return replies

    async def aclose(self) -> None:
        await self._resp.aclose()


async def send_one(redis: aioredis.Redis, cmd: Cmd) -> object:
    """One command on redis-py, off the hot path, loading its script if Redis lost it."""
    execute = cast(Callable[..., Awaitable[object]], redis.execute_command)
    try:
        return await execute(*cmd.args)
    except NoScriptError:
        assert cmd.script is not None
        await redis.script_load(source(*cmd.script))
        return await execute(*cmd.args)


def text(value: object) -> str:
    """A reply as str (bytes are decoded; integers rendered)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, RespError):
        raise value
    return str(value)
