"""Re-quotes to the bidder session: the price-only fast path checks what a first quote checks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidders.session import Action, Send, SessionLimits
from clearing.money import PriceMicros
from clearing.types import Offer
from tests.bidders.session_cases import INVALID_OFFERS, OFFERISH
from tests.bidders.session_kit import (
    DELETE,
    greeted,
    minimal,
    offer,
    quote,
    reject_errors,
    upserted,
)

# -- re-quotes: an offer whose only change is its prices has only its prices checked -----------


def taken_and_errors(actions: list[Action]) -> tuple[tuple[Offer, ...], object]:
    last = actions[-1]
    assert isinstance(last, Send)
    return upserted(actions), last.message.get("errors")


@pytest.mark.parametrize(("body", "reason"), INVALID_OFFERS)
def test_a_requote_is_checked_like_a_first_quote(body: dict[str, object], reason: str) -> None:
    # The session knows the valid example offer; each mutation of it, under the same offer_id,
    # must be rejected exactly as a session that never saw the offer rejects it.
    known = greeted()
    assert upserted(quote(known, 1, offer()))
    fresh = greeted()
    requoted, first = quote(known, 2, body), quote(fresh, 2, body)
    assert taken_and_errors(requoted) == taken_and_errors(first)
    assert reason in str(reject_errors(requoted)[0]["message"])


@pytest.mark.parametrize(
    "changes",
    [{"capacity": {"concurrency": True}}, {"capacity": {"concurrency": 1.0}}, {"ttl_ms": 15e3}],
)
def test_a_requote_with_a_bool_or_float_equal_to_the_known_int_is_rejected(
    changes: dict[str, object],
) -> None:
    # `true == 1` and `1.0 == 1` in Python: the re-quote path must not take them for the ints.
    session = greeted()
    known = dict(minimal("one"), capacity={"concurrency": 1}, ttl_ms=15_000)
    assert upserted(quote(session, 1, known))
    actions = quote(session, 2, dict(known, **changes))  # json.dumps: true, 1.0, 15000.0
    assert not upserted(actions)
    assert len(reject_errors(actions)) == 1


def test_a_price_only_requote_keeps_every_other_field() -> None:
    session = greeted()
    (first,) = upserted(quote(session, 1, offer()))
    cheaper = offer(input_usd_per_mtok="0.4", output_usd_per_mtok="0.5")
    (again,) = upserted(quote(session, 2, cheaper))
    assert again == replace(
        first, input_price=PriceMicros(400_000), output_price=PriceMicros(500_000)
    )
    (fresh,) = upserted(quote(greeted(), 1, cheaper))
    assert again == fresh
    # Without its cached price, the cached price is the input price again.
    (plain,) = upserted(quote(session, 3, offer(cached_input_usd_per_mtok=DELETE)))
    assert plain.cached_input_price == plain.input_price == 590_000


PRICES = st.sampled_from(["0.5", "0.25", "2", "0", "x", "0.1234567", None, 3, 0.75])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(OFFERISH, PRICES, PRICES, PRICES | st.just(DELETE)), min_size=1, max_size=4
        ),
        min_size=1,
        max_size=5,
    )
)
def test_a_long_session_takes_and_rejects_what_a_fresh_one_would(
    quotes: list[list[tuple[dict[str, object], object, object, object]]],
) -> None:
    limits = SessionLimits(max_offers_per_provider=1_000, max_ttl_ms=60_000)
    long_lived = greeted(limits)
    for seq, entries in enumerate(quotes, start=1):
        offers: list[object] = []
        for body, pin, pout, pcached in entries:
            priced = dict(body, input_usd_per_mtok=pin, output_usd_per_mtok=pout)
            if pcached is DELETE:
                priced.pop("cached_input_usd_per_mtok", None)
            else:
                priced["cached_input_usd_per_mtok"] = pcached
            offers.append(priced)
        assert taken_and_errors(quote(long_lived, seq, *offers)) == taken_and_errors(
            quote(greeted(limits), seq, *offers)
        )
