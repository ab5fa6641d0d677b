"""Shared helpers for the accounts tests: whole dollars in nanos, UTC epoch ms and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

USD = 10**9


def ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0, milli: int = 0
) -> int:
    """Epoch ms of a UTC date and time: ms(2025, 1, 31, 23, 59, 59, 999)."""
    when = datetime(year, month, day, hour, minute, sec, tzinfo=UTC)
    return int(when.timestamp()) * 1000 + milli


@dataclass
class FakeClock:
    now: int

    def __call__(self) -> int:
        return self.now
