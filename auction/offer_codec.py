"""An offer's wire form: the interface's OFFER object plus the book's provider, quality and seq."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from json.encoder import encode_basestring_ascii as _q
from operator import attrgetter
from typing import Any

from bidders import wirejson
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


_FIELDS = tuple(f.name for f in fields(Offer))
_SEQ = _FIELDS.index("seq")
_PRICES = ("input_price", "output_price", "cached_input_price")
_values = attrgetter(*_FIELDS)  # an offer's field values, as a tuple
_shape = attrgetter(*(name for name in _FIELDS if name not in (*_PRICES, "seq")))


def offer_from_text(text: str) -> Offer:
    """`offer_from_json(json.loads(text))` for a change stream's offer JSON (a body + its seq).

    Raises:
        KeyError, TypeError, ValueError: the record is not one the book wrote.
    """
    data = wirejson.loads(text)
    if not isinstance(data, dict):
        raise TypeError("an offer record must be a JSON object")
    return offer_from_json(data)


class OfferCodec:
    """Offer bodies written by this process, remembered so that they cost less the next time.

    A bidder re-quotes the same offers with new prices, so `body` keeps each offer's text around
    its prices (by the offer's other fields) and splices the new prices in. And the replica reads
    each offer this process wrote back from the change stream moments later: `decode` finds it
    by its body (as many times as it was written: a bidder that alternates between two prices
    writes each body again before the replica reads the first) instead of parsing the JSON. A
    body names every field but the seq, so an equal text means an equal offer. The memories are
    bounded (oldest entry out first). One per process (the Market's), shared by its Book and
    BookReplica.
    """

    def __init__(self, max_entries: int = 8192) -> None:
        self._max = max_entries
        self._written: dict[str, list[Any]] = {}  # body -> [the offer, writes not yet decoded]
        self._frames: dict[tuple[object, ...], tuple[str, str]] = {}  # shape -> text around prices
        self._prices: dict[int, str] = {}  # micro-USD -> its decimal text

    def body(self, offer: Offer) -> str:
        """`offer_body_text(offer)`, remembered for `decode`."""
        shape = _shape(offer)
        frame = self._frames.get(shape)
        if frame is None:
            frame = _frame(offer)
            _put(self._frames, shape, frame, self._max)
        body = (
            f'{frame[0]}"input_usd_per_mtok":"{self._price(offer.input_price)}",'
            f'"output_usd_per_mtok":"{self._price(offer.output_price)}",'
            f'"cached_input_usd_per_mtok":"{self._price(offer.cached_input_price)}",{frame[1]}'
        )
        entry = self._written.get(body)
        _put(self._written, body, [offer, 1 if entry is None else entry[1] + 1], self._max)
        return body

    def _price(self, micros: int) -> str:
        # Bidders quote from a small set of prices: most are formatted already.
        text = self._prices.get(micros)
        if text is None:
            if len(self._prices) >= self._max:
                self._prices.clear()
            text = self._prices[micros] = _format(micros)
        return text

    def decode(self, text: str) -> Offer:
        """`offer_from_text(text)`, without parsing the JSON of an offer this process wrote.

        Raises:
            KeyError, TypeError, ValueError: the record is not one the book wrote.
        """
        # The upsert script splices `,"seq":N` in before the body's closing brace.
        head, sep, tail = text.rpartition(',"seq":')
        seq = tail[:-1]
        if sep and tail.endswith("}") and seq.isascii() and seq.isdigit():
            # Read once: the entry dies young, which keeps it out of the GC's older generations.
            body = head + "}"
            entry = self._written.get(body)
            if entry is not None:
                entry[1] -= 1
                if not entry[1]:
                    del self._written[body]
                values = list(_values(entry[0]))
                values[_SEQ] = int(seq)
                return Offer(*values)
        return offer_from_text(text)


def _frame(offer: Offer) -> tuple[str, str]:
    """`offer_body_text(offer)` before its first price field and after its last."""
    body = offer_body_text(offer)
    start = body.index(',"input_usd_per_mtok":') + 1
    end = body.index('"capacity":', start)
    return body[:start], body[end:]


def _put(memory: dict[Any, Any], key: object, value: object, limit: int) -> None:
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > limit:
        del memory[next(iter(memory))]


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
        provider=expect_str(data["provider"]),
        offer_id=expect_str(data["offer_id"]),
        model=expect_str(data["model"]),
        input_price=_price(data["input_usd_per_mtok"]),
        output_price=_price(data["output_usd_per_mtok"]),
        cached_input_price=_price(data["cached_input_usd_per_mtok"]),
        concurrency=expect_int(capacity["concurrency"]),
        quality=expect_int(data["quality"]),
        context_window=expect_int(data["context_window"]),
        max_output_tokens=expect_int(data["max_output_tokens"]),
        features=frozenset(expect_str(f) for f in features),
        seq=expect_int(data["seq"]),
        upstream_model=expect_str(data.get("upstream_model", "")),
        quantization=_opt_str(data.get("quantization")),
        tokens_per_minute=_opt_int(capacity.get("tokens_per_minute")),
        ttft_ms=_opt_int(latency.get("ttft_ms")),
        output_tokens_per_s=_opt_int(latency.get("output_tokens_per_s")),
        region=_opt_str(data.get("region")),
        ttl_ms=expect_int(data["ttl_ms"]),
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


def expect_str(value: object) -> str:
    """A decoded JSON string. Raises TypeError for anything else."""
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def expect_int(value: object) -> int:
    """A decoded JSON integer (not a bool). Raises TypeError for anything else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else expect_str(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else expect_int(value)
