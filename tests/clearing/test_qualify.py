"""Each pass-over reason, the order they are checked in, and live figures over declared ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from clearing.money import Nanos, PriceMicros
from clearing.qualify import CHECK_ORDER, ask_picos, out_tokens, pass_reason
from clearing.types import PASS_REASONS, Offer, OfferLive, Requirements

OFFER = Offer(
    provider="acme",
    offer_id="fast",
    model="m",
    input_price=PriceMicros(1_000_000),  # $1 per Mtok
    output_price=PriceMicros(2_000_000),
    cached_input_price=PriceMicros(500_000),
    concurrency=2,
    quality=70,
    context_window=10_000,
    max_output_tokens=2_000,
    features=frozenset({"tools", "streaming"}),
    seq=1,
    quantization="fp8",
    tokens_per_minute=50_000,
    ttft_ms=300,
    output_tokens_per_s=100,
    region="eu",
)
REQ = Requirements(model="m", input_tokens=1_000, max_tokens=500)

CASES: list[tuple[str, Requirements, Offer, OfferLive | None]] = [
    ("provider", replace(REQ, providers_only=frozenset({"other"})), OFFER, None),
    ("provider", replace(REQ, providers_ignore=frozenset({"acme"})), OFFER, None),
    ("region", replace(REQ, region="us"), OFFER, None),
    ("region", replace(REQ, region="eu"), replace(OFFER, region=None), None),
    ("quantization", replace(REQ, quantizations=frozenset({"bf16"})), OFFER, None),
    (
        "quantization",
        replace(REQ, quantizations=frozenset({"fp8"})),
        replace(OFFER, quantization=None),
        None,
    ),
    ("quality", replace(REQ, min_quality=71), OFFER, None),
    ("missing_feature", replace(REQ, features=frozenset({"vision"})), OFFER, None),
    ("context_too_small", replace(REQ, input_tokens=9_501), OFFER, None),
    ("context_too_small", replace(REQ, max_tokens=2_001, input_tokens=0), OFFER, None),
    ("context_too_small", replace(REQ, max_tokens=None, input_tokens=8_001), OFFER, None),
    ("too_slow", replace(REQ, max_ttft_ms=299), OFFER, None),
    ("too_slow", replace(REQ, max_ttft_ms=10_000), replace(OFFER, ttft_ms=None), None),
    ("too_slow", replace(REQ, min_output_tokens_per_s=101), OFFER, None),
    (
        "too_slow",
        replace(REQ, min_output_tokens_per_s=1),
        replace(OFFER, output_tokens_per_s=None),
        None,
    ),
    ("too_slow", replace(REQ, max_ttft_ms=300), OFFER, OfferLive(observed_ttft_ms=301)),
    (
        "too_slow",
        replace(REQ, min_output_tokens_per_s=100),
        OFFER,
        OfferLive(observed_output_tokens_per_s=99),
    ),
    # 1,000 × $1/Mtok + 500 × $2/Mtok = $0.002 = 2,000,000 nano-USD.
    ("too_expensive", replace(REQ, max_cost=Nanos(1_999_999)), OFFER, None),
    ("unhealthy", REQ, OFFER, OfferLive(cooling_down=True)),
    ("no_capacity", REQ, OFFER, OfferLive(in_flight=2)),
    ("no_capacity", REQ, OFFER, OfferLive(tokens_this_minute=48_501)),
]


@pytest.mark.parametrize(("reason", "req", "offer", "live"), CASES)
def test_each_reason(reason: str, req: Requirements, offer: Offer, live: OfferLive | None) -> None:
    assert pass_reason(req, offer, live) == reason


QUALIFYING: list[tuple[Requirements, Offer, OfferLive | None]] = [
    (REQ, OFFER, None),
    (REQ, OFFER, OfferLive(in_flight=1, tokens_this_minute=48_500)),
    (replace(REQ, max_cost=Nanos(2_000_000)), OFFER, None),
    (replace(REQ, max_ttft_ms=300, min_output_tokens_per_s=100), OFFER, OfferLive()),
    (replace(REQ, max_ttft_ms=10), replace(OFFER, ttft_ms=None), OfferLive(observed_ttft_ms=10)),
    (replace(REQ, min_output_tokens_per_s=500), OFFER, OfferLive(observed_output_tokens_per_s=500)),
    (replace(REQ, input_tokens=9_500), OFFER, None),
    (replace(REQ, max_tokens=None, input_tokens=8_000), OFFER, None),
    (
        replace(
            REQ,
            providers_only=frozenset({"acme"}),
            providers_ignore=frozenset({"slowco"}),
            region="eu",
            quantizations=frozenset({"fp8", "bf16"}),
            min_quality=70,
            features=frozenset({"tools"}),
        ),
        OFFER,
        None,
    ),
    (REQ, replace(OFFER, tokens_per_minute=None), OfferLive(tokens_this_minute=10**9)),
]


@pytest.mark.parametrize(("req", "offer", "live"), QUALIFYING)
def test_qualifying_offers(req: Requirements, offer: Offer, live: OfferLive | None) -> None:
    assert pass_reason(req, offer, live) is None


def test_the_first_failing_check_is_the_reason() -> None:
    assert sorted(CHECK_ORDER) == sorted(PASS_REASONS)
    everything_wrong = replace(
        REQ,
        providers_only=frozenset({"other"}),
        region="us",
        quantizations=frozenset({"bf16"}),
        min_quality=99,
        features=frozenset({"vision"}),
        input_tokens=50_000,
        max_ttft_ms=1,
        max_cost=Nanos(0),
    )
    live = OfferLive(in_flight=5, cooling_down=True)
    seen: list[str] = []
    req = everything_wrong
    fixes: dict[str, Callable[[Requirements], Requirements]] = {
        "provider": lambda r: replace(r, providers_only=None),
        "region": lambda r: replace(r, region=None),
        "quantization": lambda r: replace(r, quantizations=None),
        "quality": lambda r: replace(r, min_quality=None),
        "missing_feature": lambda r: replace(r, features=frozenset()),
        "context_too_small": lambda r: replace(r, input_tokens=1_000),
        "too_slow": lambda r: replace(r, max_ttft_ms=None),
        "too_expensive": lambda r: replace(r, max_cost=None),
    }
    while (reason := pass_reason(req, OFFER, live)) is not None and reason in fixes:
        seen.append(reason)
        req = fixes[reason](req)
    assert seen == list(CHECK_ORDER[: len(fixes)])
    assert pass_reason(req, OFFER, live) == "unhealthy"
    assert pass_reason(req, OFFER, replace(live, cooling_down=False)) == "no_capacity"


def test_worst_case_output_and_rank_cost() -> None:
    assert out_tokens(REQ, OFFER) == 500
    assert out_tokens(replace(REQ, max_tokens=None), OFFER) == 2_000
    assert ask_picos(REQ, OFFER) == 1_000 * 1_000_000 + 500 * 2_000_000
