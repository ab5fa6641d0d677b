"""The price feed's wire values: trades, book changes and client commands, each encoded once.

A change or a trade reaches every subscriber, so it is turned into JSON once (`WireChange`,
`WireTrade`) and each session only splices its own `seq` in front. Client commands are parsed
here too, by pure functions that raise `BadCommand` with the interface's error code.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from auction.book_stream import BookChange, ChangeKind
from auction.offer_codec import expect_int, expect_str, offer_to_json
from bidders import wirejson
from clearing.money import Nanos, PriceMicros, format_price, format_usd, parse_price, parse_usd

Channel = Literal["book", "trades"]
CHANNELS: frozenset[str] = frozenset(get_args(Channel))
Action = Literal["subscribe", "unsubscribe"]
ErrorCode = Literal[
    "invalid_json",  # the frame is not JSON text
    "invalid_message",  # not an object with a string `type`, or a binary frame
    "unknown_type",  # `type` is not subscribe or unsubscribe
    "invalid_channels",  # `channels` is not a non-empty list of "book" / "trades"
    "invalid_models",  # `models` is not a non-empty list of strings
    "unknown_model",  # a model that is not in the catalogue
    "message_too_large",  # the frame is over the server's limit
]
ALL_MODELS = "*"
_CHANNELS_HELP = 'channels must be a non-empty list of "book" and/or "trades"'


def dumps(value: object) -> str:
    """Compact JSON text, as every feed message is written (`wirejson`'s, as text frames want)."""
    return wirejson.dumps(value).decode()


def rest_of(fields: Mapping[str, object]) -> str:
    """The text after `{"type":..,"seq":N`: `,"a":1}` for fields {"a": 1}, `}` for none."""
    return "," + dumps(fields)[1:] if fields else "}"


@dataclass(frozen=True, slots=True)
class Trade:
    """One settled request as the public sees it: no client identity, no content."""

    model: str
    provider: str
    offer_id: str
    input_price: PriceMicros
    output_price: PriceMicros
    input_tokens: int
    output_tokens: int
    cost: Nanos
    ts: int

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "provider": self.provider,
            "offer_id": self.offer_id,
            "input_usd_per_mtok": format_price(self.input_price),
            "output_usd_per_mtok": format_price(self.output_price),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": format_usd(self.cost),
            "ts": self.ts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Trade:
        """Read `to_json`'s output back (or a feed `trade` message: extra fields are ignored).

        Raises:
            KeyError, TypeError, ValueError: a field is missing or of the wrong kind.
        """
        return cls(
            model=expect_str(data["model"]),
            provider=expect_str(data["provider"]),
            offer_id=expect_str(data["offer_id"]),
            input_price=parse_price(data["input_usd_per_mtok"]),
            output_price=parse_price(data["output_usd_per_mtok"]),
            input_tokens=expect_int(data["input_tokens"]),
            output_tokens=expect_int(data["output_tokens"]),
            cost=parse_usd(data["cost_usd"]),
            ts=expect_int(data["ts"]),
        )


@dataclass(frozen=True, slots=True)
class WireTrade:
    """A trade with its message's bytes after the seq, built once for every subscriber."""

    model: str
    raw: bytes

    @classmethod
    def of(cls, trade: Trade) -> WireTrade:
        return cls(trade.model, rest_of(trade.to_json()).encode())


@dataclass(frozen=True, slots=True)
class WireChange:
    """A book change with its JSON pieces escaped once (`head` is `,"model":..,"ref":..`)."""

    model: str
    ref: str
    kind: ChangeKind
    ts: int
    head: str
    offer_json: str | None = None
    in_flight: int | None = None
    tokens: int | None = None

    @classmethod
    def of(cls, change: BookChange) -> WireChange:
        offer = change.offer_json
        if offer is None and change.offer is not None:
            offer = dumps(offer_to_json(change.offer))
        head = f',"model":{dumps(change.model)},"ref":{dumps(change.ref)}'
        return cls(
            change.model,
            change.ref,
            change.kind,
            change.ts,
            head,
            offer,
            change.in_flight,
            change.tokens,
        )


@dataclass(frozen=True, slots=True)
class Command:
    """A valid subscribe or unsubscribe; `models` is already expanded from "*"."""

    action: Action
    channels: frozenset[Channel]
    models: frozenset[str]
    every_model: bool

    def echo(self) -> dict[str, object]:
        """The fields the acknowledgement repeats."""
        models = [ALL_MODELS] if self.every_model else sorted(self.models)
        return {"channels": sorted(self.channels), "models": models}


class BadCommand(ValueError):
    """A client message the feed cannot act on; the session answers it with an `error`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def parse_command(
    data: str | bytes, known_models: Collection[str], *, max_bytes: int, max_models: int
) -> Command:
    """Parse one client frame.

    Raises:
        BadCommand: the frame is not a valid subscribe or unsubscribe.
    """
    if isinstance(data, bytes):
        raise BadCommand("invalid_message", "send text frames holding JSON objects")
    if len(data) > max_bytes:
        raise BadCommand("message_too_large", f"a message may be at most {max_bytes} bytes")
    try:
        message = wirejson.loads(data)
    except (ValueError, RecursionError):
        raise BadCommand("invalid_json", "the message is not valid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadCommand("invalid_message", 'a message is a JSON object with a string "type"')
    action = message["type"]
    if action not in ("subscribe", "unsubscribe"):
        raise BadCommand("unknown_type", f"unknown message type {action[:64]!r}")
    channels = _channels(message.get("channels"))
    models, every = _models(message.get("models", [ALL_MODELS]), known_models, max_models)
    return Command(action, channels, models, every)


def _channels(raw: object) -> frozenset[Channel]:
    if not isinstance(raw, list) or not raw:
        raise BadCommand("invalid_channels", _CHANNELS_HELP)
    if not all(isinstance(c, str) and c in CHANNELS for c in raw):
        raise BadCommand("invalid_channels", _CHANNELS_HELP)
    return frozenset(raw)


def _models(raw: object, known: Collection[str], max_models: int) -> tuple[frozenset[str], bool]:
    if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
        raise BadCommand("invalid_models", 'models must be a non-empty list of model ids or ["*"]')
    if len(raw) > max_models:
        raise BadCommand("invalid_models", f"at most {max_models} models per message")
    if ALL_MODELS in raw:
        return frozenset(known), True
    unknown = sorted(m for m in raw if m not in known)
    if unknown:
        raise BadCommand("unknown_model", f"not in the catalogue: {', '.join(unknown)[:200]}")
    return frozenset(raw), False
