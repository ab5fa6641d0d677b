"""What a running bidder reports: connections, answers to its quotes, fills and errors."""

from __future__ import annotations

from dataclasses import dataclass

from bidders.messages import Fill, OfferError


@dataclass(frozen=True, slots=True)
class Connected:
    """A new session was welcomed (every connection is a new session)."""

    session: str
    heartbeat_ms: int


@dataclass(frozen=True, slots=True)
class Acked:
    """Every offer of quote `seq` was taken, or withdraw `seq` was done."""

    seq: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Some offers of quote `seq` were not taken (the others were)."""

    seq: int
    errors: tuple[OfferError, ...]


@dataclass(frozen=True, slots=True)
class Filled:
    """A request against one of the offers settled."""

    fill: Fill


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """The marketplace could not process a message as a whole."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended; `retry_in_ms` is the backoff before the next one."""

    reason: str
    retry_in_ms: int | None  # None: not reconnecting (stopped)


BidderEvent = Connected | Acked | Rejected | Filled | ErrorReceived | Disconnected
