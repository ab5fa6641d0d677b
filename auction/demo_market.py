"""The demo's market: which simulated providers run, what they offer, and how they price it."""

from __future__ import annotations

from dataclasses import dataclass

from bidders.pricing import (
    PPM,
    PricingStrategy,
    RandomWalk,
    StaticPrices,
    TimeOfDaySchedule,
    UtilizationPricing,
)
from bidders.simulated.behaviour import SimConfig
from clearing.money import PriceMicros, parse_price
from clearing.types import ApiName


@dataclass(frozen=True, slots=True)
class DemoOffer:
    offer_id: str
    model: str
    upstream_model: str
    input_usd: str
    output_usd: str
    concurrency: int
    ttft_ms: int
    tokens_per_s: int
    pricing: str  # static | walk | off_peak | utilization
    extra: tuple[tuple[str, object], ...] = ()

    def strategy(self, seed: int) -> PricingStrategy:
        """This offer's pricing strategy (a closed set, looked up in a dict)."""
        base = (parse_price(self.input_usd), parse_price(self.output_usd))
        return _STRATEGIES[self.pricing](base[0], base[1], seed, self.concurrency)

    def fields(self) -> dict[str, object]:
        """The OFFER fields other than the prices."""
        return {
            "model": self.model,
            "upstream_model": self.upstream_model,
            "capacity": {"concurrency": self.concurrency},
            "latency": {"ttft_ms": self.ttft_ms, "output_tokens_per_s": self.tokens_per_s},
            "ttl_ms": 15_000,
            **dict(self.extra),
        }


@dataclass(frozen=True, slots=True)
class DemoProvider:
    name: str
    api: ApiName
    sim: SimConfig
    offers: tuple[DemoOffer, ...]


def _static(i: PriceMicros, o: PriceMicros, seed: int, capacity: int) -> PricingStrategy:
    return StaticPrices(i, o)


def _walk(i: PriceMicros, o: PriceMicros, seed: int, capacity: int) -> PricingStrategy:
    return RandomWalk(i, o, seed=seed, step_ppm=30_000, interval_ms=2_000)


def _off_peak(i: PriceMicros, o: PriceMicros, seed: int, capacity: int) -> PricingStrategy:
    return TimeOfDaySchedule.off_peak(i, o, discount_ppm=PPM * 3 // 10, start_hour=0, end_hour=8)


def _utilization(i: PriceMicros, o: PriceMicros, seed: int, capacity: int) -> PricingStrategy:
    ceiling = (PriceMicros(i * 3), PriceMicros(o * 3))
    return UtilizationPricing((i, o), ceiling, capacity=capacity, half_life_ms=10_000)


_STRATEGIES = {
    "static": _static,
    "walk": _walk,
    "off_peak": _off_peak,
    "utilization": _utilization,
}

_FP8 = (("quantization", "fp8"),)

DEMO_PROVIDERS: tuple[DemoProvider, ...] = (
    DemoProvider(
        "openlane",
        "openai",
        SimConfig(ttft_ms=180, output_tokens_per_s=400, reply_tokens=40),
        (
            DemoOffer("4o-mini", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "0.15", "0.60", 32, 300, 90, "walk"),
            DemoOffer("4o", "gpt-4o", "gpt-4o-2024-08-06", "2.50", "10.00", 16, 450, 60, "walk"),
        ),
    ),
    DemoProvider(
        "anthro-spot",
        "anthropic",
        SimConfig(ttft_ms=250, output_tokens_per_s=300, reply_tokens=40),
        (
            DemoOffer("haiku", "claude-3-5-haiku", "claude-3-5-haiku-20241022", "0.80", "4.00", 16, 400, 65, "off_peak"),
            DemoOffer("sonnet", "claude-3-5-sonnet", "claude-3-5-sonnet-20241022", "3.00", "15.00", 8, 600, 55, "off_peak"),
        ),
    ),
    DemoProvider(
        "gemstone",
        "gemini",
        SimConfig(ttft_ms=150, output_tokens_per_s=500, reply_tokens=40),
        (
            DemoOffer("flash", "gemini-1.5-flash", "gemini-1.5-flash-002", "0.075", "0.30", 32, 250, 150, "static"),
            DemoOffer("pro", "gemini-1.5-pro", "gemini-1.5-pro-002", "1.25", "5.00", 8, 700, 60, "static"),
        ),
    ),
    DemoProvider(
        "llamafarm",
        "openai",
        SimConfig(ttft_ms=300, output_tokens_per_s=250, reply_tokens=40),
        (
            DemoOffer("l70", "llama-3.1-70b-instruct", "meta-llama/Meta-Llama-3.1-70B-Instruct", "0.59", "0.79", 4, 500, 80, "utilization", _FP8),
            DemoOffer("l8", "llama-3.1-8b-instruct", "meta-llama/Meta-Llama-3.1-8B-Instruct", "0.05", "0.08", 8, 200, 200, "utilization", _FP8),
        ),
    ),
    DemoProvider(
        "fastinfer",
        "openai",
        SimConfig(ttft_ms=80, output_tokens_per_s=800, reply_tokens=40),
        (
            DemoOffer("l70-turbo", "llama-3.1-70b-instruct", "llama-3.1-70b-turbo", "0.88", "0.88", 32, 150, 250, "walk", (("quantization", "bf16"),)),
            DemoOffer("ds-v3", "deepseek-v3", "deepseek-chat", "0.27", "1.10", 16, 400, 60, "walk"),
            DemoOffer("qwen72", "qwen-2.5-72b-instruct", "Qwen/Qwen2.5-72B-Instruct", "0.35", "0.40", 16, 300, 90, "walk"),
            DemoOffer("mistral-s", "mistral-small", "mistral-small-latest", "0.10", "0.30", 16, 200, 120, "static"),
        ),
    ),
)  # fmt: skip
