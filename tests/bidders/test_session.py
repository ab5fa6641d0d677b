"""Properties of the bidder session: garbage never raises, invalid offers never reach the book."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bidders.messages import ERROR_CODES
from bidders.session import Action, Close, Refresh, Send, SessionLimits, Upsert, Withdraw
from clearing.types import Offer
from tests.bidders.session_cases import INVALID_OFFERS, JSON_VALUES, OFFERISH
from tests.bidders.session_kit import (
    CATALOGUE,
    LIMITS,
    greeted,
    minimal,
    new_session,
    quote,
    reject_errors,
    upserted,
)

# -- properties: garbage never raises, invalid offers never reach the book -------------------
QUOTES = st.fixed_dictionaries(
    {
        "type": st.just("quote"),
        "seq": st.integers(-1, 12),
        "offers": st.lists(OFFERISH, max_size=4),
    }
)
MESSAGES = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["hello", "quote", "withdraw", "heartbeat", "junk"]),
        "seq": JSON_VALUES | st.integers(0, 10),
        "offers": st.lists(OFFERISH, max_size=4) | JSON_VALUES,
        "offer_ids": st.lists(JSON_VALUES, max_size=3) | JSON_VALUES,
        "provider": st.sampled_from(["acme", "other"]) | JSON_VALUES,
        "protocol": st.sampled_from([1, 2]) | JSON_VALUES,
    }
)
FRAMES = (
    QUOTES.map(json.dumps)
    | QUOTES.map(json.dumps)
    | MESSAGES.map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | st.text(max_size=200)
    | st.binary(max_size=200)
)


def assert_sound(offer_: Offer) -> None:
    """A reference check, written apart from the validator, of what the book may receive."""
    info = CATALOGUE[offer_.model]
    assert offer_.provider == "acme" and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", offer_.offer_id)
    assert 0 < offer_.cached_input_price <= offer_.input_price and offer_.output_price > 0
    assert 1 <= offer_.concurrency <= 100_000 and offer_.quality == info.quality
    assert 0 < offer_.context_window <= info.context_window
    assert 0 < offer_.max_output_tokens <= info.max_output_tokens
    assert offer_.features <= info.features
    assert 1_000 <= offer_.ttl_ms <= LIMITS.max_ttl_ms


def assert_well_formed(actions: list[Action]) -> None:
    for action in actions:
        if isinstance(action, Send):
            assert action.message["type"] in {"welcome", "ack", "reject", "error"}
            json.loads(action.text)
            if action.message["type"] == "error":
                assert action.message["code"] in ERROR_CODES
        elif isinstance(action, Upsert):
            for taken in action.offers:
                assert_sound(taken)
        else:
            assert isinstance(action, Withdraw | Refresh | Close)


@settings(max_examples=150, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=5), st.booleans())
def test_garbage_never_raises_and_only_sound_offers_reach_the_book(
    frames: list[str | bytes], say_hello_first: bool
) -> None:
    session = greeted() if say_hello_first else new_session()
    for frame in frames:
        assert_well_formed(session.receive(frame, 0))


MUTATIONS = [body for body, reason in INVALID_OFFERS if reason != "offer_id"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
    st.lists(st.integers(0, 5), min_size=3, max_size=3),
)
def test_an_invalid_offer_never_reaches_the_book(
    bad: list[dict[str, object]], positions: list[int]
) -> None:
    session = greeted(SessionLimits(max_offers_per_provider=100, max_ttl_ms=60_000))
    offers: list[object] = [minimal(f"good{i}") for i in range(3)]
    for n, (body, where) in enumerate(zip(bad, positions, strict=False)):
        offers.insert(where, dict(body, offer_id=f"bad{n}"))
    actions = quote(session, 1, *offers)
    assert {o.offer_id for o in upserted(actions)} == {"good0", "good1", "good2"}
    assert [e["offer_id"] for e in reject_errors(actions)] == [
        o["offer_id"]
        for o in offers
        if isinstance(o, dict) and str(o["offer_id"]).startswith("bad")
    ]
    assert_well_formed(actions)
