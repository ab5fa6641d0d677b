"""The bidder config file (YAML or JSON): the marketplace, the token, and offers with strategies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bidders.messages import WS_PATH
from bidders.pricing import (
    PPM,
    Prices,
    PricingStrategy,
    RandomWalk,
    StaticPrices,
    TimeOfDaySchedule,
    UtilizationPricing,
)
from bidders.runtime import Backoff, BidderOptions, OfferPlan
from clearing.money import PriceMicros, parse_price


class BidderConfigError(ValueError):
    """A bidder config that cannot be used; the message lists every mistake, one per line."""


def _ratio(value: object) -> int:
    """A decimal ratio ("0.3", 0.3 or 1) as integer parts per million."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError("a ratio must be a decimal number")
    try:
        ppm = Decimal(repr(value) if isinstance(value, float) else value) * PPM
    except InvalidOperation:
        raise ValueError("a ratio must be a decimal number") from None
    if not ppm.is_finite() or ppm != ppm.to_integral_value() or ppm < 0:
        raise ValueError("a ratio must be non-negative with at most 6 decimals")
    return int(ppm)


Price = Annotated[int, BeforeValidator(parse_price)]  # "0.59" -> 590000 micro-USD per Mtok
Ratio = Annotated[int, BeforeValidator(_ratio)]  # "0.3" -> 300000 ppm
_STRICT = ConfigDict(extra="forbid", frozen=True)


class PricePair(BaseModel):
    model_config = _STRICT
    input: Price
    output: Price

    def pair(self) -> Prices:
        return PriceMicros(self.input), PriceMicros(self.output)


class StaticSpec(PricePair):
    kind: Literal["static"]

    def build(self, concurrency: int) -> PricingStrategy:
        return StaticPrices(*self.pair())


class OffPeak(BaseModel):
    model_config = _STRICT
    discount: Ratio  # "0.3" is 30% off
    start_hour: int = Field(ge=0, le=23)
    end_hour: int = Field(ge=0, le=23)


class TimeOfDaySpec(PricePair):
    kind: Literal["time_of_day"]
    hourly: list[Ratio] | None = Field(None, min_length=24, max_length=24)
    off_peak: OffPeak | None = None

    @model_validator(mode="after")
    def _one_schedule(self) -> TimeOfDaySpec:
        if (self.hourly is None) == (self.off_peak is None):
            raise ValueError("give either hourly (24 multipliers) or off_peak")
        return self

    def build(self, concurrency: int) -> PricingStrategy:
        if self.off_peak is None:
            return TimeOfDaySchedule(*self.pair(), self.hourly or ())
        return TimeOfDaySchedule.off_peak(
            *self.pair(),
            discount_ppm=self.off_peak.discount,
            start_hour=self.off_peak.start_hour,
            end_hour=self.off_peak.end_hour,
        )


class UtilizationSpec(BaseModel):
    model_config = _STRICT
    kind: Literal["utilization"]
    floor: PricePair
    ceiling: PricePair
    half_life_ms: int = Field(30_000, ge=1)
    step: Ratio = PPM // 20

    def build(self, concurrency: int) -> PricingStrategy:
        return UtilizationPricing(
            self.floor.pair(),
            self.ceiling.pair(),
            capacity=concurrency,
            half_life_ms=self.half_life_ms,
            step_ppm=self.step,
        )


class RandomWalkSpec(PricePair):
    kind: Literal["random_walk"]
    seed: int = 0
    step: Ratio = PPM // 50
    interval_ms: int = Field(1_000, ge=1)
    floor: Ratio = PPM // 2
    ceiling: Ratio = 2 * PPM

    def build(self, concurrency: int) -> PricingStrategy:
        return RandomWalk(
            *self.pair(),
            seed=self.seed,
            step_ppm=self.step,
            interval_ms=self.interval_ms,
            floor_ppm=self.floor,
            ceiling_ppm=self.ceiling,
        )


# The discriminated union is the registry of strategy kinds: one class per kind, no if/elif.
StrategySpec = Annotated[
    StaticSpec | TimeOfDaySpec | UtilizationSpec | RandomWalkSpec, Field(discriminator="kind")
]


class OfferSpec(BaseModel):
    """One OFFER (every field but the prices, which the strategy sets) and its strategy."""

    model_config = ConfigDict(extra="allow", frozen=True)
    offer_id: str
    strategy: StrategySpec

    @model_validator(mode="after")
    def _no_prices(self) -> OfferSpec:
        extra = self.model_extra or {}
        if {"input_usd_per_mtok", "output_usd_per_mtok"} & set(extra):
            raise ValueError("prices come from the strategy; leave them out of the offer")
        if not isinstance(extra.get("capacity"), dict):
            raise ValueError("capacity (with concurrency) is required")
        try:
            json.dumps(extra)
        except (TypeError, ValueError):
            raise ValueError("offer fields must be plain JSON values") from None
        return self


class Reconnect(BaseModel):
    model_config = _STRICT
    base_ms: int = Field(500, ge=1)
    cap_ms: int = Field(30_000, ge=1)


class BidderConfig(BaseModel):
    """A whole config file: see docs/bidders.md for an example."""

    model_config = _STRICT
    marketplace: str
    token: SecretStr
    provider: str = Field(min_length=1)
    agent: str = "llm-auction-bidder/0.1"
    reprice_ms: int = Field(1_000, ge=10)
    reconnect: Reconnect | None = None  # None: Backoff's defaults
    offers: list[OfferSpec] = Field(min_length=1)

    @field_validator("marketplace")
    @classmethod
    def _url(cls, value: str) -> str:
        ws_url(value)  # raises at load time rather than at connect time
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> BidderConfig:
        ids = [o.offer_id for o in self.offers]
        if len(ids) != len(set(ids)):
            raise ValueError("offer_id values must be unique")
        return self

    @property
    def url(self) -> str:
        """The bidder WebSocket URL: http(s) becomes ws(s), and a bare host gets the path."""
        return ws_url(self.marketplace)

    def options(self) -> BidderOptions:
        return BidderOptions(
            agent=self.agent,
            reprice_ms=self.reprice_ms,
            backoff=Backoff()
            if self.reconnect is None
            else Backoff(self.reconnect.base_ms, self.reconnect.cap_ms),
        )

    def plans(self) -> list[OfferPlan]:
        """The offers with fresh strategies (strategies hold state, so each run gets new ones)."""
        return [_plan(spec) for spec in self.offers]


def ws_url(marketplace: str) -> str:
    """Turn "http://127.0.0.1:8000" into "ws://127.0.0.1:8000/v1/bidders/ws"."""
    parts = urlsplit(marketplace)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise BidderConfigError(f"marketplace {marketplace!r} must be an http(s) or ws(s) URL")
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _plan(spec: OfferSpec) -> OfferPlan:
    fields = dict(spec.model_extra or {})
    capacity = fields.get("capacity")
    concurrency = capacity.get("concurrency") if isinstance(capacity, dict) else None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        concurrency = 1  # the marketplace rejects the offer; the strategy still needs a number
    return OfferPlan(spec.offer_id, fields, spec.strategy.build(concurrency))


def load_bidder_config(path: Path, environ: Mapping[str, str] | None = None) -> BidderConfig:
    """Read a YAML (or JSON) bidder config; `token_env: NAME` reads the token from `environ`.

    Raises:
        BidderConfigError: the file cannot be read, or a field is missing or invalid.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BidderConfigError(f"cannot read bidder config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BidderConfigError(f"bidder config {path} must be a mapping")
    token_env = data.pop("token_env", None)
    if token_env is not None and "token" not in data:
        token = (environ or {}).get(str(token_env))
        if not token:
            raise BidderConfigError(f"token_env names {token_env!r}, which is not set")
        data["token"] = token
    try:
        return BidderConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise BidderConfigError(f"invalid bidder config {path}:\n  " + "\n  ".join(lines)) from None
