"""Checking one OFFER object of a quote against the catalogue, and building the engine's Offer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from clearing.catalogue import Catalogue, ModelInfo
from clearing.money import MAX_PRICE_MICROS, MoneyError, PriceMicros, parse_price
from clearing.types import FEATURES, QUANTIZATIONS, Offer

OFFER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REGION = re.compile(r"[A-Za-z0-9._-]{1,32}")
MIN_TTL_MS = 1_000
MAX_CONCURRENCY = 100_000
# Generous sanity caps: a figure above these is a bidder bug, not a real capability.
MAX_TOKENS_PER_MINUTE = 10**12
MAX_TTFT_MS = 600_000
MAX_OUTPUT_TOKENS_PER_S = 1_000_000
MAX_UPSTREAM_MODEL_CHARS = 256

_FIELDS = frozenset(
    {
        "offer_id",
        "model",
        "upstream_model",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "quantization",
        "capacity",
        "latency",
        "context_window",
        "max_output_tokens",
        "features",
        "region",
        "ttl_ms",
    }
)
PRICE_FIELDS = ("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok")
_OFFER_FIELDS = tuple(f.name for f in fields(Offer))
_PRICE_SLOTS = tuple(
    _OFFER_FIELDS.index(name) for name in ("input_price", "output_price", "cached_input_price")
)
_CAPACITY_FIELDS = frozenset({"concurrency", "tokens_per_minute"})
_LATENCY_FIELDS = frozenset({"ttft_ms", "output_tokens_per_s"})


class OfferInvalid(ValueError):
    """One offer that cannot be taken; the message says why, for the `reject`."""


@dataclass(frozen=True, slots=True)
class OfferRules:
    """What an offer is checked against: the catalogue and the server's ttl bounds."""

    catalogue: Catalogue
    default_ttl_ms: int
    max_ttl_ms: int


def offer_id_of(raw: object) -> str | None:
    """The offer's `offer_id` when it is a valid one, else None."""
    if isinstance(raw, dict):
        value = raw.get("offer_id")
        if isinstance(value, str) and OFFER_ID.fullmatch(value):
            return value
    return None


def parse_offer(raw: object, provider: str, rules: OfferRules) -> Offer:
    """Check one OFFER and merge it with the catalogue into an `Offer` (seq 0: the book sets it).

    Raises:
        OfferInvalid: the first problem found, worded for the bidder.
    """
    if not isinstance(raw, dict):
        raise OfferInvalid("an offer must be a JSON object")
    if not _FIELDS.issuperset(raw):
        unknown = sorted(str(k) for k in raw if k not in _FIELDS)
        raise OfferInvalid(f"unknown field(s): {', '.join(_show(k) for k in unknown)}")
    offer_id = offer_id_of(raw)
    if offer_id is None:
        raise OfferInvalid("offer_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
    info = _model(raw.get("model"), rules.catalogue)
    input_price = _price(raw, "input_usd_per_mtok", required=True)
    cached = _price(raw, "cached_input_usd_per_mtok", required=False) or input_price
    if cached > input_price:
        raise OfferInvalid("cached_input_usd_per_mtok must not exceed input_usd_per_mtok")
    concurrency, tokens_per_minute = _capacity(raw.get("capacity"))
    ttft_ms, tokens_per_s = _latency(raw.get("latency"))
    return Offer(
        provider=provider,
        offer_id=offer_id,
        model=info.id,
        input_price=input_price,
        output_price=_price(raw, "output_usd_per_mtok", required=True),
        cached_input_price=cached,
        concurrency=concurrency,
        quality=info.quality,
        context_window=_narrowed(raw, "context_window", info.context_window),
        max_output_tokens=_narrowed(raw, "max_output_tokens", info.max_output_tokens),
        features=_features(raw.get("features"), info),
        seq=0,
        upstream_model=_upstream_model(raw.get("upstream_model"), info.id),
        quantization=_quantization(raw.get("quantization")),
        tokens_per_minute=tokens_per_minute,
        ttft_ms=ttft_ms,
        output_tokens_per_s=tokens_per_s,
        region=_region(raw.get("region")),
        ttl_ms=_ttl(raw.get("ttl_ms"), rules),
    )


@dataclass(frozen=True, slots=True)
class OfferShape:
    """A valid OFFER's fields other than its prices, and the `Offer` they made.

    A bidder re-quotes the same offers again and again with new prices: an OFFER whose other
    fields are equal to a shape's (`same_shape`) needs only its prices checked (`reprice`).
    """

    rest: dict[str, object]  # the OFFER object without its price fields
    values: tuple[Any, ...]  # the `Offer`'s field values, in field order


def shape_of(raw: Mapping[str, object], offer: Offer) -> OfferShape:
    """The shape of `raw`, an OFFER that `parse_offer` turned into `offer`."""
    rest = {k: v for k, v in raw.items() if k not in PRICE_FIELDS}
    return OfferShape(rest, tuple(getattr(offer, name) for name in _OFFER_FIELDS))


def same_shape(raw: Mapping[str, object], shape: OfferShape) -> bool:
    """True when `raw` differs from the shape's OFFER at most in its prices.

    Only sound when the message holds no JSON float or `true`/`false` (see `BidderSession`):
    then every value is a str, int, None, list or dict, and `==` between them is exact.
    """
    rest = dict(raw)
    for name in PRICE_FIELDS:
        rest.pop(name, None)
    return rest == shape.rest


def reprice(raw: Mapping[str, object], shape: OfferShape, known: dict[str, PriceMicros]) -> Offer:
    """`parse_offer(raw, ...)` for an OFFER of this shape (`same_shape`): only prices are checked.

    `known` remembers price strings already read (valid ones only); bidders re-use a few prices.

    Raises:
        OfferInvalid: a price is missing or invalid (the same message `parse_offer` gives).
    """
    input_price = _known_price(raw, "input_usd_per_mtok", True, known)
    cached = _known_price(raw, "cached_input_usd_per_mtok", False, known) or input_price
    if cached > input_price:
        raise OfferInvalid("cached_input_usd_per_mtok must not exceed input_usd_per_mtok")
    values = list(shape.values)
    i, o, c = _PRICE_SLOTS
    values[i] = input_price
    values[o] = _known_price(raw, "output_usd_per_mtok", True, known)
    values[c] = cached
    return Offer(*values)


KNOWN_PRICES_MAX = 1024


def _known_price(
    raw: Mapping[str, object], name: str, required: bool, known: dict[str, PriceMicros]
) -> PriceMicros:
    value = raw.get(name)
    if type(value) is not str:
        return _price(raw, name, required=required)
    micros = known.get(value)
    if micros is None:
        micros = _price(raw, name, required=required)  # raises for an invalid one
        if len(known) >= KNOWN_PRICES_MAX:
            known.clear()
        known[value] = micros
    return micros


def _show(value: object) -> str:
    """A value quoted for a message, cut short so a huge field cannot bloat the reply."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise OfferInvalid(f"{name} must be an integer from {lo} to {hi}")
    return value


def _optional_int(value: object, name: str, hi: int) -> int | None:
    return None if value is None else _int(value, name, 1, hi)


def _model(value: object, catalogue: Catalogue) -> ModelInfo:
    if not isinstance(value, str):
        raise OfferInvalid("model must be a string naming a catalogue model")
    info = catalogue.get(value)
    if info is None:
        raise OfferInvalid(f"model {_show(value)} is not in the catalogue")
    return info


def _price(raw: Mapping[str, object], name: str, *, required: bool) -> PriceMicros:
    value = raw.get(name)
    if value is None:
        if required:
            raise OfferInvalid(f"{name} is required")
        return PriceMicros(0)
    # Every quote prices every offer: a plain "0.59" is read with string operations, anything
    # else (and every mistake, for its message) by the general Decimal parser.
    if type(value) is str and value.isascii():
        whole, dot, frac = value.partition(".")
        if whole.isdigit() and len(frac) <= 6 and (frac.isdigit() or not dot):
            micros = int(whole) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)
            if 0 < micros <= MAX_PRICE_MICROS:
                return PriceMicros(micros)
    try:
        return parse_price(value)
    except MoneyError as exc:
        raise OfferInvalid(f"{name} {exc}") from None


def _capacity(value: object) -> tuple[int, int | None]:
    if not isinstance(value, dict):
        raise OfferInvalid("capacity must be an object with concurrency")
    if not _CAPACITY_FIELDS.issuperset(value):
        unknown = sorted(str(k) for k in value if k not in _CAPACITY_FIELDS)
        raise OfferInvalid(f"unknown field(s) in capacity: {', '.join(map(_show, unknown))}")
    concurrency = _int(value.get("concurrency"), "capacity.concurrency", 1, MAX_CONCURRENCY)
    tpm = value.get("tokens_per_minute")
    return concurrency, _optional_int(tpm, "capacity.tokens_per_minute", MAX_TOKENS_PER_MINUTE)


def _latency(value: object) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise OfferInvalid("latency must be an object")
    if not _LATENCY_FIELDS.issuperset(value):
        unknown = sorted(str(k) for k in value if k not in _LATENCY_FIELDS)
        raise OfferInvalid(f"unknown field(s) in latency: {', '.join(map(_show, unknown))}")
    return (
        _optional_int(value.get("ttft_ms"), "latency.ttft_ms", MAX_TTFT_MS),
        _optional_int(
            value.get("output_tokens_per_s"), "latency.output_tokens_per_s", MAX_OUTPUT_TOKENS_PER_S
        ),
    )


def _narrowed(raw: Mapping[str, object], name: str, ceiling: int) -> int:
    value = raw.get(name)
    if value is None:
        return ceiling
    if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
        raise OfferInvalid(f"{name} may narrow the catalogue's {ceiling}, never widen it")
    return _int(value, name, 1, ceiling)


def _features(value: object, info: ModelInfo) -> frozenset[str]:
    if value is None:
        return info.features
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise OfferInvalid("features must be a list of strings")
    unknown = sorted(set(value) - FEATURES)
    if unknown:
        raise OfferInvalid(f"unknown feature(s): {', '.join(map(_show, unknown))}")
    wider = sorted(set(value) - info.features)
    if wider:
        raise OfferInvalid(f"the catalogue's {info.id} lacks feature(s): {', '.join(wider)}")
    return frozenset(value)


def _upstream_model(value: object, model: str) -> str:
    if value is None:
        return model
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_UPSTREAM_MODEL_CHARS
        or not value.isprintable()
    ):
        raise OfferInvalid(
            f"upstream_model must be 1 to {MAX_UPSTREAM_MODEL_CHARS} printable characters"
        )
    return value


def _quantization(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in QUANTIZATIONS:
        raise OfferInvalid(f"quantization must be one of {', '.join(sorted(QUANTIZATIONS))}")
    return value


def _region(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not REGION.fullmatch(value):
        raise OfferInvalid("region must be 1 to 32 characters of A-Z a-z 0-9 . _ -")
    return value


def _ttl(value: object, rules: OfferRules) -> int:
    if value is None:
        return rules.default_ttl_ms
    return _int(value, "ttl_ms", MIN_TTL_MS, rules.max_ttl_ms)
