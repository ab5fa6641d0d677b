"""An offer's wire form: the interface's OFFER object plus the book's provider, quality and seq."""

from __future__ import annotations

from collections.abc import Mapping

from clearing.money import MAX_PRICE_MICROS, PriceMicros, format_price, parse_price
from clearing.types import Offer


def offer_to_json(offer: Offer) -> dict[str, object]:
    """The offer as a JSON-ready dict: prices as decimal strings, absent optionals left out.

    `upstream_model` is left out when empty (the bidder session fills in the model's own name).
    """
    capacity: dict[str, object] = {"concurrency": offer.concurrency}
    if offer.tokens_per_minute is not None:
        capacity["tokens_per_minute"] = offer.tokens_per_minute
    latency: dict[str, object] = {}
    if offer.ttft_ms is not None:
        latency["ttft_ms"] = offer.ttft_ms
    if offer.output_tokens_per_s is not None:
        latency["output_tokens_per_s"] = offer.output_tokens_per_s
    out: dict[str, object] = {
        "offer_id": offer.offer_id,
        "model": offer.model,
        "provider": offer.provider,
        "input_usd_per_mtok": format_price(offer.input_price),
        "output_usd_per_mtok": format_price(offer.output_price),
        "cached_input_usd_per_mtok": format_price(offer.cached_input_price),
        "capacity": capacity,
        "context_window": offer.context_window,
        "max_output_tokens": offer.max_output_tokens,
        "features": sorted(offer.features),
        "ttl_ms": offer.ttl_ms,
        "quality": offer.quality,
        "seq": offer.seq,
    }
    if offer.upstream_model:
        out["upstream_model"] = offer.upstream_model
    if offer.quantization is not None:
        out["quantization"] = offer.quantization
    if latency:
        out["latency"] = latency
    if offer.region is not None:
        out["region"] = offer.region
    return out


def offer_from_json(data: Mapping[str, object]) -> Offer:
    """Rebuild an offer from `offer_to_json`'s output (trusted: the book wrote it).

    Raises:
        KeyError, TypeError, ValueError: the record is not one `offer_to_json` wrote.
    """
    capacity = _obj(data.get("capacity", {}))
    latency = _obj(data.get("latency", {}))
    features = data["features"]
    if not isinstance(features, list):
        raise TypeError("features must be a list")
    return Offer(
        provider=_str(data["provider"]),
        offer_id=_str(data["offer_id"]),
        model=_str(data["model"]),
        input_price=_price(data["input_usd_per_mtok"]),
        output_price=_price(data["output_usd_per_mtok"]),
        cached_input_price=_price(data["cached_input_usd_per_mtok"]),
        concurrency=_int(capacity["concurrency"]),
        quality=_int(data["quality"]),
        context_window=_int(data["context_window"]),
        max_output_tokens=_int(data["max_output_tokens"]),
        features=frozenset(_str(f) for f in features),
        seq=_int(data["seq"]),
        upstream_model=_str(data.get("upstream_model", "")),
        quantization=_opt_str(data.get("quantization")),
        tokens_per_minute=_opt_int(capacity.get("tokens_per_minute")),
        ttft_ms=_opt_int(latency.get("ttft_ms")),
        output_tokens_per_s=_opt_int(latency.get("output_tokens_per_s")),
        region=_opt_str(data.get("region")),
        ttl_ms=_int(data["ttl_ms"]),
    )


def _price(value: object) -> PriceMicros:
    # Every replica decodes every change: `format_price`'s own output ("0.59", "12") is read
    # with string operations, anything else by the general (Decimal) parser.
    if isinstance(value, str):
        whole, dot, frac = value.partition(".")
        if whole.isdigit() and len(frac) <= 6 and (frac.isdigit() or not dot):
            micros = int(whole) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)
            if 0 < micros <= MAX_PRICE_MICROS:
                return PriceMicros(micros)
    return parse_price(value)


def _obj(value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)
