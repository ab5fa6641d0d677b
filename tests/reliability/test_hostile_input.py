"""Hostile chat bodies against the real server: a clear 4xx, never a 500, never a spent budget."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auction.reliability_bench import MODEL
from clearing.money import parse_usd
from tests.e2e.conftest import settings_for
from tests.reliability.conftest import admin_setup, processes

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.one_of(
    values,
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "tool", "x"]),
                                    "content": values}), max_size=3),
)  # fmt: skip
hostile = st.fixed_dictionaries(
    {"model": st.one_of(st.just(MODEL), values), "messages": messages},
    optional={
        "max_tokens": st.one_of(st.integers(-(2**40), 2**64), st.just(math.nan), values),
        "temperature": values, "stream": values, "auction": values, "n": values,
        "tools": values, "unknown_field": values,
    },
)  # fmt: skip

nearly_valid = st.fixed_dictionaries(
    {"model": st.just(MODEL), "messages": st.just([{"role": "user", "content": "hi"}])},
    optional={"max_tokens": st.integers(1, 2**64), "unknown_field": values,
              "temperature": st.floats(0, 2), "metadata": values},
)  # fmt: skip
bodies = st.one_of(hostile, nearly_valid)


def dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN and Infinity on purpose


def test_generated_bodies_never_500_and_never_spend(redis_url: str, key_prefix: str) -> None:
    """No offers are posted: a valid body ends in 503 no_qualifying_offer, so nothing may spend."""
    settings_ = settings_for(redis_url, key_prefix, max_body_bytes=64 * 1024)
    with processes(settings_, 1) as [(_, url)]:
        _, api = asyncio.run(admin_setup(url, {}, {"alice": "1"}))
        auth = {"authorization": f"Bearer {api['alice']}", "content-type": "application/json"}
        seen: list[int] = []
        with httpx.Client(base_url=url, headers=auth, timeout=10) as http:

            @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
            @given(bodies)
            def check(body: dict[str, Any]) -> None:
                reply = http.post("/v1/chat/completions", content=dumps(body))
                error = reply.json()["error"]
                assert {"message", "type", "code", "param"} <= set(error)
                assert reply.status_code in (400, 402, 503), reply.text
                if reply.status_code == 503:
                    assert error["code"] == "no_qualifying_offer"
                seen.append(reply.status_code)

            check()
            head = b'{"model":"' + MODEL.encode() + b'","messages":'
            for depth in (900, 5000):  # under and over the JSON parser's recursion limit
                deep = head + b"[" * depth + b"]" * depth + b"}"
                deep_reply = http.post("/v1/chat/completions", content=deep)
                assert deep_reply.status_code == 400, deep_reply.text
            big = http.post("/v1/chat/completions", content=b" " * (65 * 1024))
            account = http.get("/v1/account").json()
    assert 400 in seen and 503 in seen  # both refused and well-formed bodies were generated
    assert parse_usd(account["spent_usd"]) == 0
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
