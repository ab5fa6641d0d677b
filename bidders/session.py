"""The sans-I/O bidder session: one WebSocket's frames in, the actions the route must take out."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from bidders.messages import (
    CLOSE_WRONG_PROVIDER,
    PROTOCOL,
    ErrorCode,
    Message,
    OfferError,
    ack_message,
    error_message,
    fill_message,
    reject_message,
    welcome_message,
)
from bidders.offers import (
    OFFER_ID,
    OfferInvalid,
    OfferRules,
    OfferShape,
    offer_id_of,
    parse_offer,
    reprice,
    same_shape,
    shape_of,
)
from clearing.catalogue import Catalogue
from clearing.money import PriceMicros
from clearing.types import Offer

__all__ = [
    "TRANSITIONS",
    "Action",
    "BidderSession",
    "Close",
    "Refresh",
    "Send",
    "SessionLimits",
    "Upsert",
    "Withdraw",
    "fill_message",
]

State = Literal["connected", "hello", "quoting", "closed"]
Event = Literal["hello", "quote", "withdraw", "heartbeat", "close"]

# A session's whole life in one table, as h11/_state.py keeps its own: every allowed
# (state, event) pair and the state it leads to, so "may a bidder send X now?" is answered by
# reading, not by tracing code. A pair that is absent is a protocol mistake: the message gets an
# `error` (hello_required before hello, unexpected_message after it) and the state stays, because
# a bidder's mistake must not end its session. `hello` is the state after the welcome and before
# any sequenced message; `quoting` means seq numbering has begun. "close" is the socket closing,
# from either side. Nothing leaves `closed`.
TRANSITIONS: dict[tuple[State, Event], State] = {
    ("connected", "hello"): "hello",
    ("connected", "close"): "closed",
    ("hello", "quote"): "quoting",
    ("hello", "withdraw"): "quoting",
    ("hello", "heartbeat"): "hello",
    ("hello", "close"): "closed",
    ("quoting", "quote"): "quoting",
    ("quoting", "withdraw"): "quoting",
    ("quoting", "heartbeat"): "quoting",
    ("quoting", "close"): "closed",
}

MAX_SEQ = 2**53 - 1  # exact in every JSON reader
RATE_WINDOW_MS = 1_000


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The server's limits for one session (the route fills them from `Settings`)."""

    max_message_bytes: int = 256 * 1024
    max_offers_per_provider: int = 1_000
    max_messages_per_second: int = 200
    default_ttl_ms: int = 15_000
    max_ttl_ms: int = 300_000
    heartbeat_ms: int = 5_000


@dataclass(frozen=True, slots=True)
class Send:
    """Write this message to the bidder."""

    message: Message

    @property
    def text(self) -> str:
        return json.dumps(self.message, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Upsert:
    """Put these offers in the book (Book.upsert(session, offers)), before the Send that follows."""

    offers: tuple[Offer, ...]


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take these offers of the provider out of the book (Book.withdraw(provider, offer_ids))."""

    offer_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refresh:
    """Extend the ttl of this session's offers in these models (Book.refresh(session, models))."""

    models: frozenset[str]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with this code; then cancel the session's offers as on any disconnect."""

    code: int
    reason: str


Action = Send | Upsert | Withdraw | Refresh | Close


class _Refused(Exception):
    """A message answered with an `error`; nothing it asked for was done."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


@dataclass(slots=True)
class _RateWindow:
    """Messages counted in fixed one-second windows; one `rate_limited` error per window."""

    start_ms: int
    count: int = 0
    warned: bool = False

    def admit(self, now_ms: int, limit: int) -> bool:
        if not self.start_ms <= now_ms < self.start_ms + RATE_WINDOW_MS:
            self.start_ms, self.count, self.warned = now_ms, 0, False
        self.count += 1
        return self.count <= limit


class BidderSession:
    """One bidder connection's protocol state, driven by `receive`; does no I/O.

    The route feeds it every frame and performs the returned actions in order. When the socket
    closes for any reason, the route calls `connection_lost()` and then
    `Book.cancel_session(session.session_id, session.models)`.
    """

    def __init__(
        self,
        provider: str,
        catalogue: Catalogue,
        limits: SessionLimits,
        session_id: str,
        now_ms: int,
    ) -> None:
        self.provider = provider
        self.session_id = session_id
        self.limits = limits
        self.state: State = "connected"
        self.last_seq = 0
        self._rules = OfferRules(catalogue, limits.default_ttl_ms, limits.max_ttl_ms)
        self._owned: dict[str, str] = {}  # offer_id -> model: quoted here and not withdrawn
        self._models: set[str] = set()  # every model quoted here: refresh and cancel miss none
        # offer_id -> the shape of its last valid OFFER here, so a re-quote that changes only
        # prices has only its prices checked. Entries leave with withdraw; at most one per offer
        # id the session owns, so bounded by max_offers_per_provider.
        self._shapes: dict[str, OfferShape] = {}
        self._plain = False  # the message being handled has no JSON float, true or false
        self._prices: dict[str, PriceMicros] = {}  # price strings read (`reprice`)
        self._rate = _RateWindow(now_ms)

    @property
    def models(self) -> frozenset[str]:
        """Every model this session has quoted (a superset of where it still has offers)."""
        return frozenset(self._models)

    @property
    def offer_count(self) -> int:
        """The provider's live offers as this session knows them (quoted here, not withdrawn)."""
        return len(self._owned)

    def owned_in(self, models: frozenset[str]) -> int:
        """How many offers this session quoted (and did not withdraw) in `models`."""
        return sum(1 for model in self._owned.values() if model in models)

    def receive(self, data: str | bytes, now_ms: int) -> list[Action]:
        """Handle one frame; never raises for anything a bidder can send."""
        if self.state == "closed":
            return []
        if not self._rate.admit(now_ms, self.limits.max_messages_per_second):
            if self._rate.warned:
                return []
            self._rate.warned = True
            return [_error("rate_limited", "over the message rate limit; the message was dropped")]
        try:
            message = self._decode(data)
            kind = message.get("type")
            handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise _Refused("unknown_type", "type must be hello, quote, withdraw or heartbeat")
            if (self.state, kind) not in TRANSITIONS:
                if self.state == "connected":
                    raise _Refused("hello_required", "the first message must be a hello")
                raise _Refused("unexpected_message", f"{kind} is not expected now")
            return handler(self, message)
        except _Refused as refusal:
            return [_error(refusal.code, refusal.message)]

    def connection_lost(self) -> None:
        """The socket closed (either side): the session ends."""
        if self.state != "closed":
            self._advance("close")

    def _advance(self, event: Event) -> None:
        self.state = TRANSITIONS[(self.state, event)]

    def _decode(self, data: str | bytes) -> Mapping[str, object]:
        limit = self.limits.max_message_bytes
        if len(data) > limit or (
            isinstance(data, str) and len(data) * 4 > limit and _utf8_len(data) > limit
        ):
            raise _Refused("message_too_large", f"a message may be at most {limit} bytes")
        self._plain = True
        try:
            # Decimal keeps a JSON-number price exactly as written; NaN and Infinity are refused.
            value = json.loads(data, parse_float=self._float, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise _Refused("invalid_message", "a message must be one JSON object") from None
        if self._plain:
            # `true == 1` and `Decimal("64.0") == 64`: where a message may hold a bool or a
            # float, comparing its offers with known shapes is not exact (`same_shape`). A
            # "true" inside a string only costs the fast path.
            if isinstance(data, str):
                self._plain = "true" not in data and "false" not in data
            else:
                self._plain = b"true" not in data and b"false" not in data
        if not isinstance(value, dict):
            raise _Refused("invalid_message", "a message must be one JSON object")
        return value

    def _float(self, text: str) -> Decimal:
        self._plain = False
        return Decimal(text)

    def _hello(self, message: Mapping[str, object]) -> list[Action]:
        provider, protocol = message.get("provider"), message.get("protocol")
        if not isinstance(provider, str):
            raise _Refused("invalid_message", "hello.provider must be a string")
        if isinstance(protocol, bool) or not isinstance(protocol, int):
            raise _Refused("invalid_message", "hello.protocol must be an integer")
        if not isinstance(message.get("agent", ""), (str, type(None))):
            raise _Refused("invalid_message", "hello.agent must be a string")
        if provider != self.provider:
            self._advance("close")
            return [
                _error("wrong_provider", "the bidder token does not quote for that provider"),
                Close(CLOSE_WRONG_PROVIDER, "wrong provider"),
            ]
        if protocol != PROTOCOL:
            raise _Refused("unsupported_protocol", f"this marketplace speaks protocol {PROTOCOL}")
        self._advance("hello")
        return [Send(welcome_message(self.session_id, self.limits.heartbeat_ms))]

    def _quote(self, message: Mapping[str, object]) -> list[Action]:
        offers = message.get("offers")
        if not isinstance(offers, list):
            raise _Refused("invalid_message", "quote.offers must be a list")
        seq = self._next_seq(message)
        taken, errors = self._take(offers)
        self._advance("quote")
        # A quote keeps the session's earlier offers alive too. A model whose every offer is
        # quoted again needs no refresh (the upsert sets their ttl), which spares a bidder that
        # re-sends its whole state a script call per model.
        quoted = {offer.offer_id for offer in taken}
        refreshed = frozenset(m for i, m in self._owned.items() if i not in quoted)
        actions: list[Action] = [Refresh(refreshed)] if refreshed else []
        if taken:
            actions.append(Upsert(tuple(taken)))
        actions.append(Send(reject_message(seq, errors) if errors else ack_message(seq)))
        return actions

    def _take(self, offers: Sequence[object]) -> tuple[list[Offer], list[OfferError]]:
        taken: list[Offer] = []
        errors: list[OfferError] = []
        seen: set[str] = set()
        shapes = self._shapes
        for index, raw in enumerate(offers):
            # An id with a shape here was checked before: a plain look-up finds it.
            offer_id = raw.get("offer_id") if type(raw) is dict else None
            if type(offer_id) is not str or offer_id not in shapes:
                offer_id = offer_id_of(raw)
            try:
                if offer_id in seen:
                    raise OfferInvalid("duplicate offer_id in this quote; the first was taken")
                offer, shape = None, None
                if offer_id is not None:
                    seen.add(offer_id)
                    offer = self._requote(offer_id, raw)
                if offer is None:
                    offer = parse_offer(raw, self.provider, self._rules)
                    assert isinstance(raw, dict)  # parse_offer accepted it
                    shape = shape_of(raw, offer)
                self._check_room(offer.offer_id)
                if shape is not None:
                    self._shapes[offer.offer_id] = shape
            except OfferInvalid as exc:
                prefix = "" if offer_id else f"offers[{index}]: "
                errors.append(OfferError(offer_id, prefix + str(exc)))
                continue
            self._owned[offer.offer_id] = offer.model
            self._models.add(offer.model)
            taken.append(offer)
        return taken, errors

    def _requote(self, offer_id: str, raw: object) -> Offer | None:
        """The offer when only its prices differ from its last valid OFFER here, else None.

        Raises:
            OfferInvalid: a price is invalid.
        """
        shape = self._shapes.get(offer_id) if self._plain else None
        if shape is None or not isinstance(raw, dict) or not same_shape(raw, shape):
            return None
        return reprice(raw, shape, self._prices)

    def _check_room(self, offer_id: str) -> None:
        limit = self.limits.max_offers_per_provider
        if offer_id not in self._owned and len(self._owned) >= limit:
            raise OfferInvalid(f"the provider already has {limit} live offers, the limit")

    def _withdraw(self, message: Mapping[str, object]) -> list[Action]:
        raw_ids = message.get("offer_ids")
        if not isinstance(raw_ids, list):
            raise _Refused("invalid_message", "withdraw.offer_ids must be a list")
        seq = self._next_seq(message)
        self._advance("withdraw")
        ids: dict[str, None] = {}  # ordered and without repeats
        errors: list[OfferError] = []
        for index, raw in enumerate(raw_ids):
            if isinstance(raw, str) and OFFER_ID.fullmatch(raw):
                ids[raw] = None
                self._owned.pop(raw, None)
                self._shapes.pop(raw, None)
            else:
                errors.append(OfferError(None, f"offer_ids[{index}] is not a valid offer_id"))
        actions: list[Action] = [Withdraw(tuple(ids))] if ids else []
        actions.append(Send(reject_message(seq, errors) if errors else ack_message(seq)))
        return actions

    def _heartbeat(self, message: Mapping[str, object]) -> list[Action]:
        self._advance("heartbeat")
        return [Refresh(self.models)] if self._models else []

    def _next_seq(self, message: Mapping[str, object]) -> int:
        """Take the message's seq, which must exceed the last; refusing it changes nothing."""
        seq = message.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
            raise _Refused("invalid_message", f"seq must be an integer from 1 to {MAX_SEQ}")
        if seq <= self.last_seq:
            raise _Refused("bad_seq", f"seq {seq} is not greater than the last seq {self.last_seq}")
        self.last_seq = seq
        return seq


_HANDLERS: dict[str, Callable[[BidderSession, Mapping[str, object]], list[Action]]] = {
    "hello": BidderSession._hello,
    "quote": BidderSession._quote,
    "withdraw": BidderSession._withdraw,
    "heartbeat": BidderSession._heartbeat,
}


def _error(code: ErrorCode, message: str) -> Send:
    return Send(error_message(code, message))


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
