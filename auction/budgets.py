"""Budget periods and amounts: which day or month a moment falls in, and budget argument checks.

A period id is the UTC day since the epoch, or year * 12 + month - 1; the Lua scripts compute
the same ids, so a hold and its settle agree on which period a charge belongs to.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, cast, get_args

from auction.errors import InvalidRequest
from clearing.money import MAX_NANOS, Nanos

Period = Literal["day", "month", "total"]
PERIODS: frozenset[str] = frozenset(get_args(Period))
DAY_MS = 86_400_000


def period_id(period: Period, now_ms: int) -> int:
    """The id of the budget period that `now_ms` falls in; the Lua scripts compute the same."""
    if period == "total":
        return 0
    if period == "day":
        return now_ms // DAY_MS
    when = datetime.fromtimestamp(now_ms // 1000, UTC)
    return when.year * 12 + when.month - 1


def period_bounds(period: Period, now_ms: int) -> tuple[int | None, int | None]:
    """Start and end (the reset time) in epoch ms of the period holding `now_ms`; None for total."""
    if period == "total":
        return None, None
    pid = period_id(period, now_ms)
    if period == "day":
        return pid * DAY_MS, (pid + 1) * DAY_MS
    year, month0 = divmod(pid, 12)
    next_year, next_month0 = divmod(pid + 1, 12)
    start = datetime(year, month0 + 1, 1, tzinfo=UTC)
    end = datetime(next_year, next_month0 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


def check_period(period: str) -> Period:
    """`period` as a Period. Raises InvalidRequest (param "period") for anything else."""
    if period not in PERIODS:
        raise InvalidRequest("period must be one of day, month, total", param="period")
    return cast(Period, period)


def check_nanos(value: int, param: str) -> Nanos:
    """`value` as an amount in nano-USD. Raises InvalidRequest (param `param`) if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NANOS:
        raise InvalidRequest(
            f"{param} must be a whole number of nano-USD in [0, 2^53)", param=param
        )
    return Nanos(value)
