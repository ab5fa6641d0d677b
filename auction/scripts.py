"""Lua scripts: read from auction/lua, registered with a client so that calls go by EVALSHA.

redis-py's `AsyncScript` sends EVALSHA and, on NOSCRIPT (a restarted or flushed server), loads
the source and retries once, so callers never see NOSCRIPT.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript


@cache
def source(name: str, prelude: str | None = None) -> str:
    """The text of auction/lua/NAME.lua, after auction/lua/PRELUDE.lua when one is named.

    A prelude holds helpers several scripts share (Lua scripts cannot import each other).
    """
    lua = files("auction").joinpath("lua")
    text = lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if prelude is None:
        return text
    return lua.joinpath(f"{prelude}.lua").read_text(encoding="utf-8") + "\n" + text


def register(redis: aioredis.Redis, name: str, *, prelude: str | None = None) -> AsyncScript:
    """Register auction/lua/NAME.lua (after PRELUDE.lua, if named) with `redis`."""
    return redis.register_script(source(name, prelude))
