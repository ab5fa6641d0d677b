"""Settlement: the exact charge for the tokens a request actually used at its cleared offer."""

from __future__ import annotations

from clearing.money import Nanos
from clearing.prices import scaled_nanos
from clearing.types import Candidate, Offer, Usage


def usage_picos(offer: Offer, usage: Usage) -> int:
    """The cost in pico-USD of `usage` at `offer`'s own prices.

    Cached prompt tokens are charged at the cached-input price and the rest at the input price.
    Negative counts are taken as 0, and cached tokens as at most the input tokens, so a
    provider's odd report can never make a charge negative.
    """
    prompt = max(usage.input_tokens, 0)
    cached = min(max(usage.cached_input_tokens, 0), prompt)
    return (
        (prompt - cached) * offer.input_price
        + cached * offer.cached_input_price
        + max(usage.output_tokens, 0) * offer.output_price
    )


def charge(candidate: Candidate, usage: Usage) -> Nanos:
    """What the client pays for `usage` at `candidate`: its price ratio applied, never above
    the hold (`candidate.worst_case`), rounded up to nano-USD."""
    picos = usage_picos(candidate.offer, usage)
    cost = scaled_nanos(picos, candidate.ratio_num, candidate.ratio_den)
    return Nanos(min(cost, candidate.worst_case))
