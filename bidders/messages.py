"""The bidder protocol's wire vocabulary: message builders for both sides, error codes, fills."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from clearing.money import MoneyError, Nanos, format_usd, parse_usd

PROTOCOL = 1
WS_PATH = "/v1/bidders/ws"

Message = dict[str, object]
"""One JSON object on the wire."""

ErrorCode = Literal[
    "invalid_message",  # not JSON, not an object, or a field of the envelope has the wrong type
    "unknown_type",  # "type" is missing or not one of hello, quote, withdraw, heartbeat
    "message_too_large",  # the frame is over max_message_bytes
    "rate_limited",  # over max_messages_per_second: the message was dropped
    "hello_required",  # a quote, withdraw or heartbeat before hello
    "unexpected_message",  # a second hello
    "unsupported_protocol",  # hello names a protocol other than 1
    "wrong_provider",  # hello names a provider other than the token's: the session closes (4003)
    "bad_seq",  # seq not greater than the last one this session sent: nothing was changed
    "unavailable",  # the marketplace could not reach its book: nothing was changed; retry
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)

# Close codes the marketplace uses (4000-4999 is the application range of RFC 6455).
CLOSE_WRONG_PROVIDER = 4003  # like HTTP 403: the token may not quote for that provider; fatal


@dataclass(frozen=True, slots=True)
class OfferError:
    """Why one offer in a quote (or one id in a withdraw) was not taken."""

    offer_id: str | None  # None when the offer had no usable offer_id
    message: str

    def to_json(self) -> Message:
        return {"offer_id": self.offer_id, "message": self.message}


@dataclass(frozen=True, slots=True)
class Fill:
    """A settled request against one of the provider's offers, as the bidder receives it."""

    offer_id: str
    clearing_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: Nanos
    ts: int


# -- marketplace -> bidder ---------------------------------------------------------------------


def welcome_message(session_id: str, heartbeat_ms: int) -> Message:
    return {"type": "welcome", "session": session_id, "heartbeat_ms": heartbeat_ms}


def ack_message(seq: int) -> Message:
    return {"type": "ack", "seq": seq}


def reject_message(seq: int, errors: Sequence[OfferError]) -> Message:
    return {"type": "reject", "seq": seq, "errors": [e.to_json() for e in errors]}


def error_message(code: ErrorCode, message: str) -> Message:
    return {"type": "error", "code": code, "message": message}


def fill_message(fill: Fill) -> Message:
    """The `fill` a provider's sessions receive after a request against its offer settles."""
    return {
        "type": "fill",
        "offer_id": fill.offer_id,
        "clearing_id": fill.clearing_id,
        "model": fill.model,
        "input_tokens": fill.input_tokens,
        "output_tokens": fill.output_tokens,
        "cost_usd": format_usd(fill.cost),
        "ts": fill.ts,
    }


# -- bidder -> marketplace ---------------------------------------------------------------------


def hello_message(provider: str, agent: str) -> Message:
    return {"type": "hello", "provider": provider, "protocol": PROTOCOL, "agent": agent}


def quote_message(seq: int, offers: Sequence[Mapping[str, object]]) -> Message:
    return {"type": "quote", "seq": seq, "offers": [dict(o) for o in offers]}


def withdraw_message(seq: int, offer_ids: Sequence[str]) -> Message:
    return {"type": "withdraw", "seq": seq, "offer_ids": list(offer_ids)}


def heartbeat_message() -> Message:
    return {"type": "heartbeat"}


def _string(message: Mapping[str, object], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise ValueError(f"fill.{key} must be a string")
    return value


def _count(message: Mapping[str, object], key: str) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"fill.{key} must be a non-negative integer")
    return value


def parse_fill(message: Mapping[str, object]) -> Fill:
    """Read a `fill` message (the bidder side).

    Raises:
        ValueError: a field is missing or has the wrong type.
    """
    try:
        cost = parse_usd(message.get("cost_usd"))
    except MoneyError as exc:
        raise ValueError(f"fill.cost_usd {exc}") from None
    return Fill(
        offer_id=_string(message, "offer_id"),
        clearing_id=_string(message, "clearing_id"),
        model=_string(message, "model"),
        input_tokens=_count(message, "input_tokens"),
        output_tokens=_count(message, "output_tokens"),
        cost=cost,
        ts=_count(message, "ts"),
    )
