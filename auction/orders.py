"""A client's chat request as an order: parsed, its constraints derived, and cleared."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

from pydantic import ValidationError

from auction.api_keys import KeyRecord
from auction.constraints import AuctionOptions, requirements_for
from auction.errors import BudgetExceeded, InvalidRequest, NoQualifyingOffer
from auction.records import ClearingRecord
from auction.settings import Settings
from auction.settlement import Position
from bidders import wirejson
from bidders.chat import ChatRequest, explain
from clearing.catalogue import Catalogue
from clearing.money import format_usd
from clearing.tokens import estimate_input_tokens
from clearing.types import Clearing, Requirements

NO_OPTIONS = AuctionOptions.model_validate(
    {}
)  # frozen, so one instance serves every request without `auction`


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A valid chat body: the request, its `auction` options and the deadline it sets."""

    chat: ChatRequest
    options: AuctionOptions
    requirements: Requirements
    timeout_ms: int


@dataclass(slots=True)
class Order:
    """One chat request on its way: what it asked, how it cleared, and what it holds."""

    key: KeyRecord
    parsed: ParsedRequest
    clearing: Clearing
    record: ClearingRecord
    position: Position
    deadline: float  # monotonic seconds
    created: int  # epoch seconds, for the answer's `created`

    @property
    def clearing_id(self) -> str:
        return self.record.clearing_id

    @property
    def chat(self) -> ChatRequest:
        return self.parsed.chat


def new_clearing_id() -> str:
    """128 random bits, as uuid4 has, for a fraction of its cost."""
    return "clr_" + os.urandom(16).hex()


def parse_request(body: bytes, catalogue: Catalogue, settings: Settings) -> ParsedRequest:
    """Validate a chat (or quote) body and derive its requirements.

    Raises:
        InvalidRequest: malformed JSON, wrong types, unknown model, impossible constraints.
    """
    try:
        data = wirejson.loads(body)
    except ValueError:
        raise InvalidRequest("the body is not valid JSON") from None
    except RecursionError:  # a few thousand nested brackets: refuse, not a 500
        raise InvalidRequest("the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        chat = ChatRequest.model_validate(data)
    except ValidationError as exc:
        message, param = explain(exc)
        raise InvalidRequest(message, param=param or None) from None
    try:
        options = (
            NO_OPTIONS if chat.auction is None else AuctionOptions.model_validate(chat.auction)
        )
    except ValidationError as exc:
        message, param = explain(exc)
        where = f"auction.{param}" if param else "auction"
        raise InvalidRequest(f"auction.{message}", param=where) from None
    timeout_ms = options.timeout_ms or settings.default_timeout_ms
    if timeout_ms > settings.max_timeout_ms:
        raise InvalidRequest(
            f"auction.timeout_ms may be at most {settings.max_timeout_ms}",
            param="auction.timeout_ms",
        )
    tokens = estimate_input_tokens(cast(dict[str, object], data))
    requirements = requirements_for(chat, options, catalogue, tokens)
    return ParsedRequest(chat, options, requirements, timeout_ms)


def refuse_unserved(clearing: Clearing, clearing_id: str) -> None:
    """Raise the client's error when no offer qualified; return when one did.

    When some offer was passed over for its worst case above `max_cost_usd`, the price cap is
    what stands in the way, so it is a 402 as the interface says; otherwise a 503.

    Raises:
        BudgetExceeded: some offer would qualify but for `auction.max_cost_usd`.
        NoQualifyingOffer: otherwise; `details` counts the offers passed over per reason.
    """
    if clearing.ranked:
        return
    counts = dict(clearing.reason_counts)
    headers = {"x-auction-clearing-id": clearing_id}
    cap = clearing.requirements.max_cost
    if counts.get("too_expensive") and cap is not None:
        raise BudgetExceeded(
            f"every offer that meets the other constraints has a worst-case cost above "
            f"max_cost_usd ${format_usd(cap)}",
            param="auction.max_cost_usd",
            details=counts,
            headers=headers,
        )
    considered = sum(counts.values())
    what = "no live offer" if considered == 0 else f"none of the {considered} live offers"
    raise NoQualifyingOffer(
        f"{what} for model {clearing.requirements.model!r} meets the constraints",
        details=counts,
        headers=headers,
    )
