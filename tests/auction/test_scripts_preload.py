"""The broker loads at start every script the request path runs by EVALSHA, as owners name them."""

from __future__ import annotations

import importlib
import pkgutil

import auction
from auction.broker import SCRIPTS
from auction.commands import Script


def _owned_scripts() -> set[Script]:
    """Every `Script` constant a module of the `auction` package defines."""
    found: set[Script] = set()
    for info in pkgutil.iter_modules(auction.__path__):
        module = importlib.import_module(f"auction.{info.name}")
        found.update(v for v in vars(module).values() if isinstance(v, Script))
    return found


def test_every_owned_script_is_preloaded_and_has_a_source() -> None:
    owned = _owned_scripts()
    assert len(owned) >= 10  # rate limit, holds, book, health, ledger, trades
    assert owned == set(SCRIPTS)
    assert len(SCRIPTS) == len(set(SCRIPTS))
    for each in SCRIPTS:
        assert "redis.call" in each.source()  # the file and its prelude are there
