"""Exact money: prices in micro-USD per million tokens, amounts in integer nano-USD.

Why these units: the interface quotes prices in dollars per million tokens. A price with at most
six decimals ("0.59") is an integer number of micro-dollars per million tokens, which is also an
integer number of pico-dollars per token. So tokens × price is an exact integer in pico-USD, and no
rounding happens until a cost becomes an amount of money. Amounts (costs, holds, budgets) are
integer nano-USD: a cost in pico-USD is rounded *up* to the next nano-dollar once, when it becomes
an amount, so a rounded cost never undercharges the cap it was checked against by more than zero
and never differs from the exact cost by a nano-dollar or more. Integers up to 2**53 nano-USD
(about $9 million) stay exact in Redis Lua, which holds numbers as doubles.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import NewType

PriceMicros = NewType("PriceMicros", int)
"""A token price: micro-USD per million tokens (= pico-USD per token)."""

Nanos = NewType("Nanos", int)
"""An amount of money: integer nano-USD (1e-9 dollars)."""

PICOS_PER_NANO = 1000
NANOS_PER_USD = 10**9
MAX_NANOS = 2**53 - 1
# No token price above $100,000 per million tokens is plausible; the cap keeps products exact.
MAX_PRICE_MICROS = 10**11
_SIX_PLACES = Decimal("0.000001")
_NINE_PLACES = Decimal("0.000000001")


class MoneyError(ValueError):
    """A money value that cannot be represented exactly, or is out of range."""


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise MoneyError("must be a decimal string or number, not a boolean")
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, float):
        # A JSON number arrives as a float; its shortest repr is the digits the sender wrote.
        dec = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError(f"{value!r} is not a decimal number") from None
    else:
        raise MoneyError("must be a decimal string or number")
    if not dec.is_finite():
        raise MoneyError("must be a finite number")
    return dec


def _has_places(dec: Decimal, places: Decimal) -> bool:
    """Whether `dec` has no more decimals than `places`; a number too large to quantize (1e149)
    is refused as too large rather than raising InvalidOperation into a 500."""
    try:
        return dec.quantize(places) == dec
    except InvalidOperation:
        raise MoneyError("is too large") from None


def parse_price(value: object) -> PriceMicros:
    """Parse a price in USD per million tokens ("0.59") into micro-USD per Mtok.

    Raises:
        MoneyError: not a finite number, not > 0, more than six decimals, or absurdly large.
    """
    dec = _to_decimal(value)
    if dec <= 0:
        raise MoneyError("must be greater than 0")
    if not _has_places(dec, _SIX_PLACES):
        raise MoneyError("must have at most 6 decimal places")
    micros = int(dec * 1_000_000)
    if micros > MAX_PRICE_MICROS:
        raise MoneyError("is implausibly large")
    return PriceMicros(micros)


def parse_usd(value: object, *, allow_zero: bool = True) -> Nanos:
    """Parse a dollar amount ("0.002") into nano-USD; at most nine decimals.

    Raises:
        MoneyError: not finite, negative (or zero when not allowed), too precise or too large.
    """
    dec = _to_decimal(value)
    if dec < 0 or (dec == 0 and not allow_zero):
        raise MoneyError("must be greater than 0" if not allow_zero else "must not be negative")
    if not _has_places(dec, _NINE_PLACES):
        raise MoneyError("must have at most 9 decimal places")
    nanos = int(dec * NANOS_PER_USD)
    if nanos > MAX_NANOS:
        raise MoneyError("is too large")
    return Nanos(nanos)


def picos_to_nanos(picos: int) -> Nanos:
    """Round an exact pico-USD cost up to whole nano-USD."""
    return Nanos(-(-picos // PICOS_PER_NANO))


def cost_picos(tokens: int, price: PriceMicros) -> int:
    """The exact cost in pico-USD of `tokens` at `price`."""
    return tokens * price


def format_usd(nanos: int) -> str:
    """Render nano-USD as a decimal string with at least six places: 670000 -> "0.000670"."""
    text = f"{Decimal(nanos).scaleb(-9):.9f}"
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(6, "0")
    return f"{whole}.{frac}"


def format_price(micros: int) -> str:
    """Render micro-USD per Mtok as dollars per Mtok: 590000 -> "0.59"."""
    text = f"{Decimal(micros).scaleb(-6):.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
