"""An offer's wire form: the interface's OFFER object plus the book's provider, quality and seq."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from json.encoder import encode_basestring_ascii as _q

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
        "input_usd_per_mtok": _format(offer.input_price),
        "output_usd_per_mtok": _format(offer.output_price),
        "cached_input_usd_per_mtok": _format(offer.cached_input_price),
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


def offer_body_text(offer: Offer) -> str:
    """`json.dumps(offer_to_json(offer) without "seq", separators=(",", ":"))`, built directly.

    Every upsert encodes every offer it writes, so the text is assembled from its escaped parts
    (the same characters `json.dumps` writes) rather than through a dict.
    """
    capacity = f'{{"concurrency":{offer.concurrency}'
    if offer.tokens_per_minute is not None:
        capacity += f',"tokens_per_minute":{offer.tokens_per_minute}'
    features = ",".join(_q(f) for f in sorted(offer.features))
    parts = [
        f'{{"offer_id":{_q(offer.offer_id)},"model":{_q(offer.model)},'
        f'"provider":{_q(offer.provider)},'
        f'"input_usd_per_mtok":"{_format(offer.input_price)}",'
        f'"output_usd_per_mtok":"{_format(offer.output_price)}",'
        f'"cached_input_usd_per_mtok":"{_format(offer.cached_input_price)}",'
        f'"capacity":{capacity}}},"context_window":{offer.context_window},'
        f'"max_output_tokens":{offer.max_output_tokens},"features":[{features}],'
        f'"ttl_ms":{offer.ttl_ms},"quality":{offer.quality}'
    ]
    if offer.upstream_model:
        parts.append(f',"upstream_model":{_q(offer.upstream_model)}')
    if offer.quantization is not None:
        parts.append(f',"quantization":{_q(offer.quantization)}')
    if offer.ttft_ms is not None or offer.output_tokens_per_s is not None:
        latency = []
        if offer.ttft_ms is not None:
            latency.append(f'"ttft_ms":{offer.ttft_ms}')
        if offer.output_tokens_per_s is not None:
            latency.append(f'"output_tokens_per_s":{offer.output_tokens_per_s}')
        parts.append(f',"latency":{{{",".join(latency)}}}')
    if offer.region is not None:
        parts.append(f',"region":{_q(offer.region)}')
    parts.append("}")
    return "".join(parts)


# Offers this process wrote to the book, by body text (`offer_body_text`), so that its replica,
# which reads each one back from the change stream moments later, need not parse it again. A
# body names every field but the seq, so an equal text means an equal offer. Bounded: the oldest
# entry goes first.
_WRITTEN: dict[str, Offer] = {}
WRITTEN_MAX = 8192
_FIELDS = tuple(f.name for f in fields(Offer))
_SEQ = _FIELDS.index("seq")


def remember_written(body: str, offer: Offer) -> None:
    """Note that `offer_body_text(offer)` is `body`, for `offer_from_text`."""
    _WRITTEN.pop(body, None)
    _WRITTEN[body] = offer
    if len(_WRITTEN) > WRITTEN_MAX:
        del _WRITTEN[next(iter(_WRITTEN))]


def offer_from_text(text: str) -> Offer:
    """`offer_from_json(json.loads(text))` for a change stream's offer JSON (a body + its seq).

    Raises:
        KeyError, TypeError, ValueError: the record is not one the book wrote.
    """
    # The upsert script splices `,"seq":N` in before the body's closing brace.
    head, sep, tail = text.rpartition(',"seq":')
    seq = tail[:-1]
    if sep and tail.endswith("}") and seq.isascii() and seq.isdigit():
        offer = _WRITTEN.get(head + "}")
        if offer is not None:
            values = [getattr(offer, name) for name in _FIELDS]  # `replace` costs twice this
            values[_SEQ] = int(seq)
            return Offer(*values)
    return offer_from_json(json.loads(text))


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


def _format(micros: int) -> str:
    # Every upsert encodes every offer: `format_price` without its Decimal, for the usual price.
    if micros < 0:
        return format_price(PriceMicros(micros))
    whole, frac = divmod(micros, 1_000_000)
    text = f"{whole}.{frac:06d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


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
