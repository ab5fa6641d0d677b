"""The demo's live terminal view: the book per model and the latest trades, from the feed client."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from auction.feed_client import FeedClient
from auction.feed_wire import Trade
from clearing.money import format_price, format_usd

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"


@dataclass
class Tally:
    """What the demo's own traffic saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    trades: deque[Trade] = field(default_factory=lambda: deque(maxlen=12))
    traded_nanos: int = 0
    trade_count: int = 0


def render(feed: FeedClient, tally: Tally, header: str, started: float) -> str:
    """One frame of the live view as text (ANSI colours, no cursor tricks beyond a clear)."""
    lines = [CLEAR + header, ""]
    lines.append(
        f"{BOLD}uptime{RESET} {int(time.monotonic() - started)}s   "
        f"{BOLD}demo traffic{RESET} {tally.ok} ok / {tally.failed} failed of {tally.sent}   "
        f"{BOLD}trades{RESET} {tally.trade_count} for ${format_usd(tally.traded_nanos)}   "
        f"{DIM}feed: {'live' if feed.connected else 'reconnecting'}, "
        f"{feed.stats.updates} updates{RESET}"
    )
    lines.append("")
    lines.append(f"{BOLD}{'model':<26}{'offers':>7}{'best in $/Mtok':>16}{'best out':>10}"
                 f"{'in flight':>11}   best offer{RESET}")  # fmt: skip
    for model in sorted(feed.books):
        book = feed.books[model]
        if not book.offers:
            continue
        best = min(
            book.offers.values(),
            key=lambda o: Decimal(o["input_usd_per_mtok"]) + Decimal(o["output_usd_per_mtok"]),
        )
        in_flight = sum(int(o.get("in_flight", 0)) for o in book.offers.values())
        lines.append(
            f"{model:<26}{len(book.offers):>7}{_d(book.best_input()):>16}"
            f"{_d(book.best_output()):>10}{in_flight:>11}   "
            f"{best.get('provider', '?')}/{best.get('offer_id', '?')}"
        )
    lines.append("")
    lines.append(f"{BOLD}latest trades{RESET}")
    for trade in reversed(tally.trades):
        stamp = time.strftime("%H:%M:%S", time.localtime(trade.ts / 1000))
        lines.append(
            f"  {stamp}  {trade.model:<24} {trade.provider + '/' + trade.offer_id:<26}"
            f"{trade.input_tokens:>6} in {trade.output_tokens:>5} out  "
            f"${format_usd(trade.cost)}  @ {format_price(trade.input_price)}/"
            f"{format_price(trade.output_price)}"
        )
    if tally.statuses:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items()))
        lines.append(f"{DIM}statuses: {codes}{RESET}")
    lines.append(f"{DIM}Ctrl-C stops everything.{RESET}")
    return "\n".join(lines)


def _d(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.normalize():f}"
