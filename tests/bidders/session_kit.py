"""Drivers for the sans-I/O bidder session tests: a catalogue, limits, offer bodies, and helpers
that feed a session messages and read its actions."""

from __future__ import annotations

import json

from bidders.messages import ERROR_CODES
from bidders.session import Action, BidderSession, Send, SessionLimits, Upsert
from clearing.catalogue import parse_catalogue
from clearing.types import Offer

CATALOGUE = parse_catalogue(
    [
        {
            "id": "llama-3.1-70b-instruct",
            "quality": 80,
            "context_window": 131072,
            "max_output_tokens": 8192,
            "features": ["tools", "json_mode", "streaming"],
        },
        {
            "id": "gpt-4o",
            "quality": 85,
            "context_window": 128000,
            "max_output_tokens": 16384,
            "features": ["tools", "vision", "json_mode", "streaming"],
        },
    ]
)
LIMITS = SessionLimits(
    max_message_bytes=4096,
    max_offers_per_provider=3,
    max_messages_per_second=20,
    default_ttl_ms=15_000,
    max_ttl_ms=60_000,
    heartbeat_ms=5_000,
)
DELETE = object()


def offer(**changes: object) -> dict[str, object]:
    """The interface's example OFFER, with fields changed (DELETE removes one)."""
    body: dict[str, object] = {
        "offer_id": "llama-70b-fast",
        "model": "llama-3.1-70b-instruct",
        "upstream_model": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        "input_usd_per_mtok": "0.59",
        "output_usd_per_mtok": "0.79",
        "cached_input_usd_per_mtok": "0.30",
        "quantization": "fp8",
        "capacity": {"concurrency": 64, "tokens_per_minute": 2000000},
        "latency": {"ttft_ms": 250, "output_tokens_per_s": 180},
        "context_window": 131072,
        "max_output_tokens": 8192,
        "features": ["tools", "json_mode", "streaming"],
        "region": "us",
        "ttl_ms": 15000,
    }
    for key, value in changes.items():
        if value is DELETE:
            del body[key]
        else:
            body[key] = value
    return body


def minimal(offer_id: str = "o1", model: str = "llama-3.1-70b-instruct") -> dict[str, object]:
    return {
        "offer_id": offer_id,
        "model": model,
        "input_usd_per_mtok": "0.5",
        "output_usd_per_mtok": "1.5",
        "capacity": {"concurrency": 4},
    }


def new_session(limits: SessionLimits = LIMITS) -> BidderSession:
    return BidderSession("acme", CATALOGUE, limits, "sess-1", now_ms=0)


def state_of(session: BidderSession) -> str:
    """The state, read through a call so that mypy does not narrow it between steps."""
    return session.state


def send(session: BidderSession, message: object, now_ms: int = 0) -> list[Action]:
    text = message if isinstance(message, str | bytes) else json.dumps(message)
    return session.receive(text, now_ms)


def greeted(limits: SessionLimits = LIMITS) -> BidderSession:
    session = new_session(limits)
    send(session, {"type": "hello", "provider": "acme", "protocol": 1, "agent": "t/1"})
    return session


def only_error(actions: list[Action]) -> str:
    """The code of the single error the actions consist of."""
    assert len(actions) == 1 and isinstance(actions[0], Send), actions
    message = actions[0].message
    assert message["type"] == "error" and isinstance(message["message"], str)
    assert message["code"] in ERROR_CODES
    return str(message["code"])


def quote(session: BidderSession, seq: int, *offers: object) -> list[Action]:
    return send(session, {"type": "quote", "seq": seq, "offers": list(offers)})


def reject_errors(actions: list[Action]) -> list[dict[str, object]]:
    last = actions[-1]
    assert isinstance(last, Send) and last.message["type"] == "reject"
    errors = last.message["errors"]
    assert isinstance(errors, list)
    return errors


def upserted(actions: list[Action]) -> tuple[Offer, ...]:
    found = [a for a in actions if isinstance(a, Upsert)]
    return found[0].offers if found else ()
