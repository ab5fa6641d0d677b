"""The bidder WebSocket end to end: the handshake and quotes, through a real `websockets` client.

The handshake (token, hello, welcome), quotes and the validation of every offer rule, and
re-quoting, against the marketplace in the test's event loop (`market`, from conftest). The book is
read straight from Redis (`Book.snapshot`) unless the point is what a server process would clear,
which is asked of that process (POST /v1/quote). Withdraw, seq, ttl, cancel on disconnect,
malformed traffic and limits: `test_bidder_ws_session.py`. Fills, several processes and
reconnection: `test_bidder_fills.py`.
"""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from clearing.money import parse_price
from tests.e2e.bidder_kit import (
    MODEL,
    Json,
    ask,
    bidder,
    book_of,
    closed_with,
    hello,
    offer,
    quote,
    token_for,
    until,
    until_book,
    ws_url,
)
from tests.e2e.conftest import (
    MarketFactory,
    Marketplace,
)


# -- the handshake -----------------------------------------------------------------------------
@pytest.mark.parametrize("authorization", [None, "Bearer bt_wrong", "Basic abc", "Bearer "])
async def test_a_missing_or_wrong_token_gets_401_before_the_upgrade(
    market: Marketplace, authorization: str | None
) -> None:
    await token_for(market)
    headers = {} if authorization is None else {"Authorization": authorization}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(market.url), additional_headers=headers, open_timeout=5):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"")["error"]["code"] == "invalid_api_key"


async def test_hello_is_answered_by_welcome(start_market: MarketFactory) -> None:
    market = await start_market(heartbeat_ms=1234)
    token = await token_for(market)
    async with bidder(market.url, token) as ws, bidder(market.url, token) as other:
        welcome = await hello(ws, "acme")
        assert welcome["heartbeat_ms"] == 1234 and isinstance(welcome["session"], str)
        assert (await hello(other, "acme"))["session"] != welcome["session"]
        assert await ask(ws, {"type": "hello", "provider": "acme", "protocol": 1}) == {
            "type": "error", "code": "unexpected_message", "message": "hello is not expected now"
        }  # fmt: skip
        assert (await quote(ws, 1)) == {"type": "ack", "seq": 1}  # the session went on


async def test_hello_must_come_first_and_the_session_goes_on(market: Marketplace) -> None:
    token = await token_for(market)
    async with bidder(market.url, token) as ws:
        for early in (
            {"type": "quote", "seq": 1, "offers": [offer("o1")]},
            {"type": "withdraw", "seq": 1, "offer_ids": ["o1"]},
            {"type": "heartbeat"},
        ):
            reply = await ask(ws, early)
            assert (reply["type"], reply["code"]) == ("error", "hello_required")
        assert (await ask(ws, {"type": "hello", "provider": "acme", "protocol": 2}))[
            "code"
        ] == "unsupported_protocol"
        for bad in ({"provider": 7, "protocol": 1}, {"provider": "acme", "protocol": "1"}):
            reply = await ask(ws, {"type": "hello", **bad})
            assert reply["code"] == "invalid_message"
        await hello(ws, "acme")
        assert await quote(ws, 1, offer("o1")) == {"type": "ack", "seq": 1}  # seq 1 was unused
    await until_book(market.market.book, set())  # and cancelled on close


async def test_hello_for_another_provider_is_refused_and_closed_4003(market: Marketplace) -> None:
    token = await token_for(market, "acme")
    await token_for(market, "rival")
    async with bidder(market.url, token) as ws:
        reply = await ask(ws, {"type": "hello", "provider": "rival", "protocol": 1})
        assert (reply["type"], reply["code"]) == ("error", "wrong_provider")
        assert await closed_with(ws) == 4003


# -- quotes ------------------------------------------------------------------------------------
async def test_a_quoted_offer_is_acked_and_clearable(market: Marketplace) -> None:
    token = await token_for(market)
    key = await market.add_key("alice")
    async with bidder(market.url, token, "acme") as ws:
        assert await quote(ws, 1, offer("o1", "0.40", "0.90")) == {"type": "ack", "seq": 1}
        stored = (await book_of(market.market.book))["acme/o1"]
        assert (stored.input_price, stored.output_price) == (
            parse_price("0.40"),
            parse_price("0.9"),
        )
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        headers = {"authorization": f"Bearer {key}"}

        async def clears() -> bool:
            reply = await market.admin.post("/v1/quote", json=body, headers=headers)
            winner = reply.json()["winner"]
            return winner is not None and (winner["provider"], winner["offer_id"]) == ("acme", "o1")

        await until(clears, timeout=2)


async def test_a_quote_takes_the_valid_offers_and_rejects_each_invalid_one(
    market: Marketplace,
) -> None:
    token = await token_for(market)
    async with bidder(market.url, token, "acme") as ws:
        reply = await quote(
            ws, 3,
            offer("good-1"),
            offer("bad-model", model="gpt-99"),
            offer("good-2", "0.6", "0.7", ttl_ms=5000, region="eu", quantization="fp8"),
            offer("bad-price", "0"),
            5,
            {"model": MODEL},
        )  # fmt: skip
        book = await book_of(market.market.book)
    assert set(book) == {"acme/good-1", "acme/good-2"}
    good = book["acme/good-2"]
    assert (good.ttl_ms, good.region, good.quantization) == (5000, "eu", "fp8")
    assert reply["type"] == "reject" and reply["seq"] == 3
    assert reply["errors"] == [
        {"offer_id": "bad-model", "message": "model 'gpt-99' is not in the catalogue"},
        {"offer_id": "bad-price", "message": "input_usd_per_mtok must be greater than 0"},
        {"offer_id": None, "message": "offers[4]: an offer must be a JSON object"},
        {
            "offer_id": None,
            "message": "offers[5]: offer_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        },
    ]


# One family of OFFER rules per case: (overrides that break an offer, what the reject says).
INVALID: dict[str, list[tuple[Json, str]]] = {
    "model": [
        ({"model": "gpt-99"}, "model 'gpt-99' is not in the catalogue"),
        ({"model": 7}, "model must be a string naming a catalogue model"),
    ],
    "widening": [
        ({"context_window": 131_073}, "context_window may narrow the catalogue's 131072"),
        ({"max_output_tokens": 8193}, "max_output_tokens may narrow the catalogue's 8192"),
        ({"features": ["tools", "vision"]}, "lacks feature(s): vision"),
        ({"features": ["teleport"]}, "unknown feature(s): 'teleport'"),
        ({"context_window": 0}, "context_window must be an integer from 1 to 131072"),
    ],
    "prices": [
        ({"input_usd_per_mtok": "NaN"}, "input_usd_per_mtok"),
        ({"input_usd_per_mtok": "Infinity"}, "input_usd_per_mtok"),
        ({"output_usd_per_mtok": "-0.5"}, "output_usd_per_mtok must be greater than 0"),
        ({"input_usd_per_mtok": "0"}, "input_usd_per_mtok must be greater than 0"),
        ({"input_usd_per_mtok": 0}, "input_usd_per_mtok must be greater than 0"),
        ({"input_usd_per_mtok": "0.1234567"}, "at most 6 decimal places"),
        ({"input_usd_per_mtok": 0.5900001}, "at most 6 decimal places"),
        ({"output_usd_per_mtok": "100000.5"}, "output_usd_per_mtok is implausibly large"),
        ({"input_usd_per_mtok": True}, "input_usd_per_mtok"),
        ({"output_usd_per_mtok": None}, "output_usd_per_mtok is required"),
        ({"cached_input_usd_per_mtok": "0.51"}, "must not exceed input_usd_per_mtok"),
    ],
    "ttl": [
        ({"ttl_ms": 999}, "ttl_ms must be an integer from 1000 to 300000"),
        ({"ttl_ms": 300_001}, "ttl_ms must be an integer from 1000 to 300000"),
        ({"ttl_ms": 15000.0}, "ttl_ms must be an integer"),
        ({"ttl_ms": "15000"}, "ttl_ms must be an integer"),
    ],
    "capacity": [
        ({"capacity": None}, "capacity must be an object with concurrency"),
        ({"capacity": {"concurrency": 0}}, "capacity.concurrency must be an integer from 1"),
        ({"capacity": {"concurrency": 100_001}}, "capacity.concurrency must be an integer"),
        ({"capacity": {"concurrency": True}}, "capacity.concurrency must be an integer"),
        ({"capacity": {"concurrency": 8, "burst": 2}}, "unknown field(s) in capacity: 'burst'"),
        ({"capacity": {"concurrency": 8, "tokens_per_minute": 0}}, "tokens_per_minute"),
    ],
    "unknown_field": [
        ({"colour": "red"}, "unknown field(s): 'colour'"),
        ({"quality": 99}, "unknown field(s): 'quality'"),  # quality is the catalogue's alone
        ({"latency": {"ttft": 5}}, "unknown field(s) in latency: 'ttft'"),
    ],
    "other_fields": [
        ({"quantization": "fp3"}, "quantization must be one of"),
        ({"region": "us west"}, "region must be 1 to 32 characters"),
        ({"upstream_model": ""}, "upstream_model must be 1 to 256 printable characters"),
        ({"latency": {"ttft_ms": -1}}, "latency.ttft_ms must be an integer"),
    ],
}


@pytest.mark.parametrize("family", list(INVALID))
async def test_invalid_offers_are_rejected_and_leave_the_book_unchanged(
    market: Marketplace, family: str
) -> None:
    cases = INVALID[family]
    token = await token_for(market)
    ids = [f"{family}-{i}" for i in range(len(cases))]
    async with bidder(market.url, token, "acme") as ws:
        assert (await quote(ws, 1, *(offer(i) for i in ids)))["type"] == "ack"
        before = await book_of(market.market.book)
        # Each broken offer twice: re-quoting a live offer, and as a new one.
        requoted = [offer(i, **bad) for i, (bad, _) in zip(ids, cases, strict=True)]
        new = [offer(f"new-{i}", **bad) for i, (bad, _) in zip(ids, cases, strict=True)]
        reply = await quote(ws, 2, *requoted, offer("fresh"), *new)
        after = await book_of(market.market.book)  # read before the close cancels them
    assert reply["type"] == "reject" and reply["seq"] == 2
    assert [e["offer_id"] for e in reply["errors"]] == ids + [f"new-{i}" for i in ids]
    for error, (_, says) in zip(reply["errors"], cases + cases, strict=True):
        assert says in error["message"], error
    assert set(after) == {*before, "acme/fresh"}
    assert {ref: after[ref] for ref in before} == before  # prices, fields and seq unchanged


async def test_a_repeated_offer_id_in_one_quote_takes_the_first(market: Marketplace) -> None:
    token = await token_for(market)
    async with bidder(market.url, token, "acme") as ws:
        reply = await quote(ws, 1, offer("o1", "0.30"), offer("o1", "0.20"), offer("o2"))
        assert reply["errors"] == [
            {"offer_id": "o1", "message": "duplicate offer_id in this quote; the first was taken"}
        ]
        book = await book_of(market.market.book)
    assert set(book) == {"acme/o1", "acme/o2"}
    assert book["acme/o1"].input_price == parse_price("0.30")


async def test_requoting_changes_prices_and_moves_an_offer_between_models(
    market: Marketplace,
) -> None:
    token = await token_for(market)
    book = market.market.book
    async with bidder(market.url, token, "acme") as ws:
        await quote(ws, 1, offer("o1"), offer("o2"))
        first = await book_of(book)
        await quote(ws, 2, offer("o1"), offer("o2", "0.45"))
        second = await book_of(book)
        assert second["acme/o1"] == first["acme/o1"]  # same prices: same time priority
        assert second["acme/o2"].input_price == parse_price("0.45")
        assert second["acme/o2"].seq > first["acme/o2"].seq
        await quote(ws, 3, offer("o2", model="llama-3.1-8b-instruct"))
        assert set(await book_of(book)) == {"acme/o1"}
        assert set(await book_of(book, "llama-3.1-8b-instruct")) == {"acme/o2"}
    await until_book(book, set(), "llama-3.1-8b-instruct")  # cancel misses no model
