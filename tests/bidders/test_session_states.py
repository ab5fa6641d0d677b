"""The bidder session's state table and the hello handshake."""

from __future__ import annotations

import pytest

from bidders.session import TRANSITIONS, Close, Send
from tests.bidders.session_kit import (
    greeted,
    minimal,
    new_session,
    only_error,
    quote,
    send,
    state_of,
)

# -- the state table -------------------------------------------------------------------------


def test_transition_table_is_the_documented_life() -> None:
    assert TRANSITIONS == {
        ("connected", "hello"): "hello",
        ("connected", "close"): "closed",
        ("hello", "quote"): "quoting",
        ("hello", "withdraw"): "quoting",
        ("hello", "heartbeat"): "hello",
        ("hello", "close"): "closed",
        ("quoting", "quote"): "quoting",
        ("quoting", "withdraw"): "quoting",
        ("quoting", "heartbeat"): "quoting",
        ("quoting", "close"): "closed",
    }
    assert not any(state == "closed" for state, _ in TRANSITIONS)


def test_states_follow_the_table() -> None:
    session = new_session()
    assert state_of(session) == "connected"
    send(session, {"type": "hello", "provider": "acme", "protocol": 1})
    assert state_of(session) == "hello"
    send(session, {"type": "heartbeat"})
    assert state_of(session) == "hello"
    quote(session, 1, minimal())
    assert state_of(session) == "quoting"
    session.connection_lost()
    assert state_of(session) == "closed"
    assert quote(session, 2, minimal()) == []
    session.connection_lost()  # idempotent
    assert state_of(session) == "closed"


def test_withdraw_moves_hello_to_quoting() -> None:
    session = greeted()
    send(session, {"type": "withdraw", "seq": 1, "offer_ids": []})
    assert state_of(session) == "quoting"


# -- hello -----------------------------------------------------------------------------------


def test_hello_gets_welcome() -> None:
    session = new_session()
    actions = send(session, {"type": "hello", "provider": "acme", "protocol": 1, "agent": "a/1"})
    assert actions == [Send({"type": "welcome", "session": "sess-1", "heartbeat_ms": 5000})]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "quote", "seq": 1, "offers": []},
        {"type": "withdraw", "seq": 1, "offer_ids": []},
        {"type": "heartbeat"},
    ],
)
def test_anything_before_hello_is_refused_and_the_session_goes_on(message: object) -> None:
    session = new_session()
    assert only_error(send(session, message)) == "hello_required"
    assert state_of(session) == "connected"
    send(session, {"type": "hello", "provider": "acme", "protocol": 1})
    assert state_of(session) == "hello"


def test_second_hello_is_unexpected() -> None:
    session = greeted()
    hello = {"type": "hello", "provider": "acme", "protocol": 1}
    assert only_error(send(session, hello)) == "unexpected_message"
    assert state_of(session) == "hello"


def test_hello_for_another_provider_closes_with_4003() -> None:
    session = new_session()
    actions = send(session, {"type": "hello", "provider": "other", "protocol": 1})
    assert len(actions) == 2
    assert isinstance(actions[0], Send) and actions[0].message["code"] == "wrong_provider"
    assert actions[1] == Close(4003, "wrong provider")
    assert state_of(session) == "closed"
    assert send(session, {"type": "hello", "provider": "acme", "protocol": 1}) == []


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"provider": "acme", "protocol": 2}, "unsupported_protocol"),
        ({"provider": "acme", "protocol": "1"}, "invalid_message"),
        ({"provider": "acme", "protocol": True}, "invalid_message"),
        ({"provider": "acme"}, "invalid_message"),
        ({"protocol": 1}, "invalid_message"),
        ({"provider": 7, "protocol": 1}, "invalid_message"),
        ({"provider": "acme", "protocol": 1, "agent": 5}, "invalid_message"),
    ],
)
def test_bad_hello_is_refused_and_hello_may_be_retried(hello: dict[str, object], code: str) -> None:
    session = new_session()
    assert only_error(send(session, {"type": "hello", **hello})) == code
    assert state_of(session) == "connected"
    send(session, {"type": "hello", "provider": "acme", "protocol": 1, "agent": None})
    assert state_of(session) == "hello"
