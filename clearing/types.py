"""The clearing engine's vocabulary: offers, a book snapshot, requirements, and the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from clearing.money import Nanos, PriceMicros

Feature = Literal["tools", "vision", "json_mode", "streaming"]
FEATURES: frozenset[str] = frozenset(get_args(Feature))

Quantization = Literal["int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32"]
QUANTIZATIONS: frozenset[str] = frozenset(get_args(Quantization))

ApiName = Literal["openai", "anthropic", "gemini"]
API_NAMES: frozenset[str] = frozenset(get_args(ApiName))

PassReason = Literal[
    "quality",  # the model's catalogue quality is below min_quality
    "too_expensive",  # the worst-case cost is above max_cost_usd
    "too_slow",  # ttft above max_ttft_ms, or output speed below min_output_tokens_per_s
    "missing_feature",  # lacks a feature the request needs
    "context_too_small",  # prompt + max_tokens over the context window, or over the output limit
    "no_capacity",  # every unit of capacity.concurrency (or tokens per minute) is in use
    "provider",  # provider not in providers.only, or in providers.ignore
    "region",  # not in the requested region
    "quantization",  # quantization not among the accepted ones (unknown never matches)
    "unhealthy",  # the provider keeps failing and is cooling down
]
PASS_REASONS: tuple[str, ...] = get_args(PassReason)

PriceRule = Literal["pay_as_ask", "second_price"]


@dataclass(frozen=True, slots=True)
class Offer:
    """One live offer as the engine sees it: the bidder's fields merged with the catalogue's.

    `context_window`, `max_output_tokens` and `features` are already the narrowed values, and
    `quality` comes from the catalogue. `seq` is the book's time priority: lower is earlier; it
    changes when the offer is first posted or its prices change.
    """

    provider: str
    offer_id: str
    model: str
    input_price: PriceMicros
    output_price: PriceMicros
    cached_input_price: PriceMicros
    concurrency: int
    quality: int
    context_window: int
    max_output_tokens: int
    features: frozenset[str]
    seq: int
    upstream_model: str = ""
    quantization: str | None = None
    tokens_per_minute: int | None = None
    ttft_ms: int | None = None
    output_tokens_per_s: int | None = None
    region: str | None = None
    ttl_ms: int = 15_000

    @property
    def ref(self) -> str:
        """The offer's book-wide identity: "provider/offer_id"."""
        return f"{self.provider}/{self.offer_id}"


@dataclass(frozen=True, slots=True)
class OfferLive:
    """What changes request by request, keyed by `Offer.ref` in a `BookSnapshot`."""

    in_flight: int = 0
    tokens_this_minute: int = 0
    cooling_down: bool = False
    observed_ttft_ms: int | None = None  # replaces the declared figure once enough were seen
    observed_output_tokens_per_s: int | None = None


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """The offers the engine may choose among, with their live state (absent means idle)."""

    offers: Sequence[Offer]
    live: Mapping[str, OfferLive] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Requirements:
    """What one request needs, from its body, its `auction` object and the token estimate.

    `max_tokens` None means the offer's own output limit is the worst case.
    """

    model: str  # a catalogue id, or "auto"
    input_tokens: int
    max_tokens: int | None = None
    min_quality: int | None = None
    max_ttft_ms: int | None = None
    min_output_tokens_per_s: int | None = None
    features: frozenset[str] = frozenset()
    quantizations: frozenset[str] | None = None
    providers_only: frozenset[str] | None = None
    providers_ignore: frozenset[str] = frozenset()
    region: str | None = None
    max_cost: Nanos | None = None
    expected_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A qualifying offer, with what this request would cost there.

    The charge for actual usage is `ceil(usage_picos * ratio_num / ratio_den)` in pico-USD,
    rounded up to nano-USD and never above `worst_case`. Pay-as-ask has ratio 1/1.
    """

    offer: Offer
    rank_cost_picos: int  # input estimate × input price + worst-case output × output price
    worst_case: Nanos  # the hold: the most this request can be charged here
    expected: Nanos  # the charge if the output is `expected_output_tokens` long
    ratio_num: int = 1
    ratio_den: int = 1


@dataclass(frozen=True, slots=True)
class PassedOver:
    """An offer that did not qualify, and the first reason found."""

    ref: str
    model: str
    reason: PassReason


@dataclass(frozen=True, slots=True)
class Clearing:
    """The engine's answer for one request.

    `ranked` is cheapest first (the winner, then the fallbacks for failover). `passed_over`
    lists the offers examined that did not qualify; `reason_counts` counts them per reason.
    `outranked` counts the qualifying offers that were not ranked because at least `depth`
    cheaper ones were found first.
    """

    requirements: Requirements
    price_rule: PriceRule
    ranked: tuple[Candidate, ...]
    passed_over: tuple[PassedOver, ...]
    reason_counts: Mapping[str, int]
    outranked: int = 0

    @property
    def winner(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a provider reported (or the estimate where it reported none)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    estimated: bool = False
