"""Withdraws, heartbeats and the refreshes that keep a bidder session's offers alive."""

from __future__ import annotations

from bidders.session import Refresh, Send, Upsert, Withdraw
from tests.bidders.session_kit import greeted, minimal, only_error, quote, send

# -- withdraw --------------------------------------------------------------------------------


def test_withdraw_removes_and_acks() -> None:
    session = greeted()
    quote(session, 1, minimal("a"), minimal("b"))
    actions = send(session, {"type": "withdraw", "seq": 2, "offer_ids": ["a", "a", "zz"]})
    assert actions == [Withdraw(("a", "zz")), Send({"type": "ack", "seq": 2})]
    assert session.offer_count == 1


def test_withdraw_with_bad_ids_rejects_them_and_withdraws_the_rest() -> None:
    session = greeted()
    actions = send(session, {"type": "withdraw", "seq": 1, "offer_ids": ["a", 5, "no/slash"]})
    assert actions == [
        Withdraw(("a",)),
        Send(
            {
                "type": "reject",
                "seq": 1,
                "errors": [
                    {"offer_id": None, "message": "offer_ids[1] is not a valid offer_id"},
                    {"offer_id": None, "message": "offer_ids[2] is not a valid offer_id"},
                ],
            }
        ),
    ]


def test_withdraw_without_a_list_is_invalid() -> None:
    session = greeted()
    assert only_error(send(session, {"type": "withdraw", "seq": 1, "offer_ids": "a"})) == (
        "invalid_message"
    )
    assert session.last_seq == 0


# -- heartbeat, refresh and models -----------------------------------------------------------


def test_heartbeat_refreshes_the_sessions_models() -> None:
    session = greeted()
    assert send(session, {"type": "heartbeat"}) == []
    quote(session, 1, minimal("a"), minimal("b", "gpt-4o"))
    both = frozenset({"llama-3.1-70b-instruct", "gpt-4o"})
    assert session.models == both
    assert send(session, {"type": "heartbeat"}) == [Refresh(both)]


def test_a_quote_also_refreshes_the_sessions_earlier_offers() -> None:
    session = greeted()
    first = quote(session, 1, minimal("a", "gpt-4o"))
    assert not any(isinstance(a, Refresh) for a in first)
    actions = quote(session, 2, minimal("b"))
    assert actions[0] == Refresh(frozenset({"gpt-4o"}))
    assert isinstance(actions[1], Upsert) and actions[2] == Send({"type": "ack", "seq": 2})


def test_a_quote_refreshes_only_models_with_offers_it_does_not_requote() -> None:
    session = greeted()
    quote(session, 1, minimal("a", "gpt-4o"), minimal("b"), minimal("c"))
    whole = quote(session, 2, minimal("a", "gpt-4o"), minimal("b"), minimal("c"))
    assert not any(isinstance(a, Refresh) for a in whole)  # the upsert sets every ttl
    part = quote(session, 3, minimal("a", "gpt-4o"), minimal("b"))
    assert part[0] == Refresh(frozenset({"llama-3.1-70b-instruct"}))  # c lives on too
    moved = quote(session, 4, minimal("c", "gpt-4o"), minimal("b"))
    assert moved[0] == Refresh(frozenset({"gpt-4o"}))  # a; c left llama for gpt-4o


def test_models_keep_every_model_quoted_for_cancel() -> None:
    session = greeted()
    quote(session, 1, minimal("a", "gpt-4o"))
    send(session, {"type": "withdraw", "seq": 2, "offer_ids": ["a"]})
    assert session.models == frozenset({"gpt-4o"}) and session.offer_count == 0
