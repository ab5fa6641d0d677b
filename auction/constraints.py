"""From a client request to the engine's Requirements: the `auction` object and the body."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from auction.errors import InvalidRequest
from clearing.catalogue import Catalogue
from clearing.money import MoneyError, Nanos, parse_usd
from clearing.types import Feature, Quantization, Requirements

NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


class ProviderFilter(BaseModel):
    """`auction.providers`: only these providers, and never those."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    only: list[str] | None = Field(None, max_length=256)
    ignore: list[str] = Field(default_factory=list, max_length=256)


class AuctionOptions(BaseModel):
    """The optional `auction` object of a chat request (interface §4)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_cost_usd: str | int | float | None = None
    min_quality: int | None = Field(None, ge=0, le=100)
    max_ttft_ms: int | None = Field(None, gt=0, le=3_600_000)
    min_output_tokens_per_s: int | None = Field(None, gt=0, le=1_000_000)
    features: list[Feature] = Field(default_factory=list, max_length=8)
    providers: ProviderFilter = ProviderFilter(only=None)
    quantizations: list[Quantization] | None = Field(None, max_length=16)
    region: str | None = Field(None, pattern=NAME_PATTERN)
    timeout_ms: int | None = Field(None, gt=0)

    @field_validator("max_cost_usd")
    @classmethod
    def _money(cls, value: str | int | float | None) -> str | int | float | None:
        if value is not None:
            try:
                parse_usd(value, allow_zero=False)
            except MoneyError as exc:
                raise ValueError(f"max_cost_usd {exc}") from None
        return value

    @property
    def max_cost(self) -> Nanos | None:
        return None if self.max_cost_usd is None else parse_usd(self.max_cost_usd)


class RequestShape(Protocol):
    """What the constraints need from a parsed chat request."""

    @property
    def model(self) -> str: ...
    @property
    def needs_tools(self) -> bool: ...
    @property
    def needs_vision(self) -> bool: ...
    @property
    def needs_json_mode(self) -> bool: ...
    @property
    def wants_stream(self) -> bool: ...
    @property
    def output_cap(self) -> int | None: ...


def requirements_for(
    request: RequestShape, options: AuctionOptions, catalogue: Catalogue, input_tokens: int
) -> Requirements:
    """The engine's Requirements for a request, or InvalidRequest when none could ever be met.

    Raises:
        InvalidRequest: unknown model, or constraints no catalogue model can meet.
    """
    features: set[str] = set(options.features)
    for needed, feature in (
        (request.needs_tools, "tools"),
        (request.needs_vision, "vision"),
        (request.needs_json_mode, "json_mode"),
        (request.wants_stream, "streaming"),
    ):
        if needed:
            features.add(feature)
    _check_possible(request, options, catalogue, frozenset(features))
    only = options.providers.only
    return Requirements(
        model=request.model,
        input_tokens=input_tokens,
        max_tokens=request.output_cap,
        min_quality=options.min_quality,
        max_ttft_ms=options.max_ttft_ms,
        min_output_tokens_per_s=options.min_output_tokens_per_s,
        features=frozenset(features),
        quantizations=frozenset(options.quantizations) if options.quantizations else None,
        providers_only=frozenset(only) if only is not None else None,
        providers_ignore=frozenset(options.providers.ignore),
        region=options.region,
        max_cost=options.max_cost,
    )


def _check_possible(
    request: RequestShape, options: AuctionOptions, catalogue: Catalogue, features: frozenset[str]
) -> None:
    if request.model == "auto":
        models = list(catalogue.values())
    elif request.model in catalogue:
        models = [catalogue[request.model]]
    else:
        raise InvalidRequest(
            f"model {request.model!r} is not in the catalogue; use 'auto' or one of GET /v1/models",
            param="model",
        )
    only = options.providers.only
    if only is not None and set(only) <= set(options.providers.ignore):
        raise InvalidRequest(
            "auction.providers: every provider in 'only' is also ignored", param="auction"
        )
    if not any(
        (options.min_quality is None or m.quality >= options.min_quality) and features <= m.features
        for m in models
    ):
        what = f"model {request.model!r}" if request.model != "auto" else "no catalogue model"
        raise InvalidRequest(
            f"{what} cannot meet min_quality={options.min_quality} with features "
            f"{sorted(features)}",
            param="auction",
        )
