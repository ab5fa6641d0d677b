"""What the client gets back with every answer: the `auction` object, headers, and usage."""

from __future__ import annotations

from collections.abc import Iterable

from auction.records import effective_price
from auction.settlement import Ticket
from bidders.completion import ChatCompletion, ChatCompletionChunk
from clearing.money import Nanos, format_usd
from clearing.tokens import text_tokens
from clearing.types import PriceRule, Usage


def auction_object(
    clearing_id: str,
    ticket: Ticket,
    price_rule: PriceRule,
    cost: Nanos,
    usage: Usage,
    attempts: int,
) -> dict[str, object]:
    """The top-level `auction` object of an answer (and of a stream's final chunk)."""
    cand = ticket.candidate
    offer = cand.offer
    return {
        "clearing_id": clearing_id,
        "provider": offer.provider,
        "offer_id": offer.offer_id,
        "model": offer.model,
        "input_usd_per_mtok": effective_price(offer.input_price, cand.ratio_num, cand.ratio_den),
        "output_usd_per_mtok": effective_price(offer.output_price, cand.ratio_num, cand.ratio_den),
        "price_rule": price_rule,
        "cost_usd": format_usd(cost),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "usage_estimated": usage.estimated,
        "attempts": attempts,
    }


def auction_headers(clearing_id: str, ticket: Ticket) -> dict[str, str]:
    """The headers every answer carries (a non-streaming one adds x-auction-cost-usd)."""
    offer = ticket.candidate.offer
    return {
        "x-auction-clearing-id": clearing_id,
        "x-auction-provider": offer.provider,
        "x-auction-model": offer.model,
        "x-auction-offer": offer.offer_id,
    }


def _delta_texts(delta: object) -> Iterable[str]:
    # dict, not Mapping: these are decoded JSON, and an ABC check costs ten times as much
    if not isinstance(delta, dict):
        return
    content = delta.get("content")
    if isinstance(content, str):
        yield content
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for part in (function.get("name"), function.get("arguments")):
                if isinstance(part, str):
                    yield part


def answer_texts(body: ChatCompletion) -> Iterable[str]:
    """The generated text of a whole answer: content and tool-call names and arguments."""
    for choice in body.get("choices", []):
        yield from _delta_texts(choice.get("message"))


def chunk_texts(chunk: ChatCompletionChunk) -> Iterable[str]:
    """The generated text a stream chunk carries."""
    for choice in chunk.get("choices", []):
        yield from _delta_texts(choice.get("delta"))


def estimated_usage(input_tokens: int, texts: Iterable[str]) -> Usage:
    """Usage when the provider reported none: the prompt estimate and the output's estimate."""
    return Usage(input_tokens, text_tokens("".join(texts)), estimated=True)
