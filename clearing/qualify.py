"""Why an offer cannot serve a request: the first pass-over reason, or None when it qualifies.

The checks run in this order, and the first that fails is the reason recorded:

    provider, region, quantization, quality, missing_feature, context_too_small,
    too_slow, too_expensive, unhealthy, no_capacity

Every check is O(1). The order puts the client's own filters first, then whether the offer can
serve this request at all, then its cost, and last the live state (health, capacity), which
changes from moment to moment: so a 503's reason counts tell a client what it could change, and
an offer is only counted as busy when it would otherwise have qualified.
"""

from __future__ import annotations

from clearing.money import picos_to_nanos
from clearing.types import Offer, OfferLive, PassReason, Requirements

CHECK_ORDER: tuple[PassReason, ...] = (
    "provider",
    "region",
    "quantization",
    "quality",
    "missing_feature",
    "context_too_small",
    "too_slow",
    "too_expensive",
    "unhealthy",
    "no_capacity",
)


def out_tokens(req: Requirements, offer: Offer) -> int:
    """The worst-case output: the request's `max_tokens`, else the offer's output limit."""
    return offer.max_output_tokens if req.max_tokens is None else req.max_tokens


def ask_picos(req: Requirements, offer: Offer) -> int:
    """The rank cost in pico-USD: the estimated input and worst-case output at the offer's ask."""
    return req.input_tokens * offer.input_price + out_tokens(req, offer) * offer.output_price


def _too_slow(req: Requirements, offer: Offer, live: OfferLive | None) -> bool:
    # An offer that declares no figure cannot promise to meet a latency constraint.
    if req.max_ttft_ms is not None:
        ttft = offer.ttft_ms
        if live is not None and live.observed_ttft_ms is not None:
            ttft = live.observed_ttft_ms
        if ttft is None or ttft > req.max_ttft_ms:
            return True
    if req.min_output_tokens_per_s is not None:
        speed = offer.output_tokens_per_s
        if live is not None and live.observed_output_tokens_per_s is not None:
            speed = live.observed_output_tokens_per_s
        if speed is None or speed < req.min_output_tokens_per_s:
            return True
    return False


def _no_capacity(req: Requirements, offer: Offer, live: OfferLive | None, out: int) -> bool:
    in_flight = 0 if live is None else live.in_flight
    if in_flight >= offer.concurrency:
        return True
    if offer.tokens_per_minute is None:
        return False
    used = 0 if live is None else live.tokens_this_minute
    return used + req.input_tokens + out > offer.tokens_per_minute


def pass_reason(req: Requirements, offer: Offer, live: OfferLive | None) -> PassReason | None:
    """The first reason (in `CHECK_ORDER`) that `offer` cannot serve `req`, or None.

    `live` is the offer's live state; None means idle and healthy. Observed latency figures in
    `live` replace the offer's declared ones.
    """
    only = req.providers_only
    if (only is not None and offer.provider not in only) or offer.provider in req.providers_ignore:
        return "provider"
    if req.region is not None and offer.region != req.region:
        return "region"
    if req.quantizations is not None and offer.quantization not in req.quantizations:
        return "quantization"
    if req.min_quality is not None and offer.quality < req.min_quality:
        return "quality"
    if not req.features <= offer.features:
        return "missing_feature"
    out = out_tokens(req, offer)
    if req.input_tokens + out > offer.context_window or out > offer.max_output_tokens:
        return "context_too_small"
    if _too_slow(req, offer, live):
        return "too_slow"
    if req.max_cost is not None:
        worst = req.input_tokens * offer.input_price + out * offer.output_price
        if picos_to_nanos(worst) > req.max_cost:
            return "too_expensive"
    if live is not None and live.cooling_down:
        return "unhealthy"
    if _no_capacity(req, offer, live, out):
        return "no_capacity"
    return None
