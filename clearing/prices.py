"""The price rule: what each ranked offer charges, as an exact ratio to its own ask.

- `pay_as_ask`: every candidate charges its own prices (ratio 1/1).
- `second_price`: a candidate charges its prices scaled by `next / own`, where `own` is its rank
  cost and `next` the rank cost of the best qualifying offer ranked after it from a *different*
  provider (a provider cannot set its own price by posting a second offer); 1/1 if there is
  none. The ratio is never below 1, and the hold and charge are capped at `max_cost`.

Amounts are exact: `ceil(picos × num / den)` pico-USD, then rounded up to nano-USD once.
The expected cost assumes `Requirements.expected_output_tokens` output tokens, or
`min(out, DEFAULT_EXPECTED_OUTPUT)` when the request gives no figure, where `out` is the
worst-case output; it is never above the worst case.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

from clearing.money import Nanos, picos_to_nanos
from clearing.qualify import out_tokens
from clearing.rank import Enough, Ranked
from clearing.types import Candidate, Offer, PriceRule, Requirements

DEFAULT_EXPECTED_OUTPUT = 256


def scaled_nanos(picos: int, num: int, den: int) -> Nanos:
    """`picos × num / den`, rounded up to pico-USD and then to nano-USD."""
    return picos_to_nanos(-(-picos * num // den))


def expected_output_tokens(req: Requirements, offer: Offer) -> int:
    """The output length the expected cost assumes: never above the worst case."""
    out = out_tokens(req, offer)
    guess = req.expected_output_tokens
    if guess is None:
        guess = DEFAULT_EXPECTED_OUTPUT
    return max(0, min(guess, out))


def enough(rule: PriceRule, depth: int) -> Enough:
    """When a walk's final prefix is enough to price the first `depth` candidates.

    Second price needs, beyond the first `depth`, an offer from a provider other than the one
    ranked last of them: that is the next other-provider offer for every one of them.
    """
    if rule == "pay_as_ask":
        return lambda qualifying, final: final >= depth
    checked = depth  # the final prefix never changes, so each row is looked at once

    def with_next_provider(qualifying: list[Ranked], final: int) -> bool:
        nonlocal checked
        if final < depth:
            return False
        last = qualifying[depth - 1][3].provider
        for at in range(checked, final):
            if qualifying[at][3].provider != last:
                return True
        checked = final
        return False

    return with_next_provider


def ratios(rule: PriceRule, prefix: Sequence[Ranked], count: int) -> list[tuple[int, int]]:
    """The (num, den) charge ratio of each of the first `count` offers of a final prefix."""
    count = min(count, len(prefix))
    if rule == "pay_as_ask":
        return [(1, 1)] * count
    # next_other[p]: the rank cost of the first offer after p from another provider, if any.
    next_other: list[int | None] = [None] * len(prefix)
    for p in range(len(prefix) - 2, -1, -1):
        after = prefix[p + 1]
        same = after[3].provider == prefix[p][3].provider
        next_other[p] = next_other[p + 1] if same else after[0]
    return [_ratio(prefix[p][0], next_other[p]) for p in range(count)]


def _ratio(own: int, other: int | None) -> tuple[int, int]:
    if other is None or own == 0:
        return (1, 1)
    common = gcd(other, own)
    return (other // common, own // common)


def candidate(req: Requirements, ranked: Ranked, ratio: tuple[int, int]) -> Candidate:
    """A ranked offer with its hold (worst case) and expected cost under `ratio`."""
    cost, _, _, offer = ranked
    num, den = ratio
    worst = scaled_nanos(cost, num, den)
    if req.max_cost is not None:
        worst = min(worst, req.max_cost)
    expected_picos = (
        req.input_tokens * offer.input_price
        + expected_output_tokens(req, offer) * offer.output_price
    )
    expected = min(scaled_nanos(expected_picos, num, den), worst)
    return Candidate(offer, cost, Nanos(worst), Nanos(expected), num, den)
