"""The bidder WebSocket session end to end, through a real `websockets` client.

Withdraw, seq, ttl and heartbeats, cancel on disconnect, malformed traffic and limits, against the
marketplace in the test's event loop (`market`, from conftest). The book is read straight from
Redis (`Book.snapshot`). The handshake and quote validation: `test_bidder_ws.py`. Fills, several
processes and reconnection: `test_bidder_fills.py`.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from clearing.money import parse_price
from tests.e2e.bidder_kit import (
    ask,
    bidder,
    book_of,
    offer,
    quote,
    recv,
    send,
    silent,
    token_for,
    until,
    until_book,
)
from tests.e2e.conftest import (
    MarketFactory,
    Marketplace,
)


# -- withdraw, seq, ttl, disconnect --------------------------------------------------------------
async def test_withdraw(market: Marketplace) -> None:
    token = await token_for(market)
    book = market.market.book
    async with bidder(market.url, token, "acme") as ws:
        await quote(ws, 1, offer("a"), offer("b"), offer("c"))
        reply = await ask(ws, {"type": "withdraw", "seq": 2, "offer_ids": ["a", "a", "gone"]})
        assert reply == {"type": "ack", "seq": 2}  # repeats ignored, unknown ids no error
        assert set(await book_of(book)) == {"acme/b", "acme/c"}
        reply = await ask(ws, {"type": "withdraw", "seq": 3, "offer_ids": ["b", "no spaces", 4]})
        assert reply == {
            "type": "reject",
            "seq": 3,
            "errors": [
                {"offer_id": None, "message": "offer_ids[1] is not a valid offer_id"},
                {"offer_id": None, "message": "offer_ids[2] is not a valid offer_id"},
            ],
        }
        assert set(await book_of(book)) == {"acme/c"}  # the valid one was still withdrawn
        reply = await ask(ws, {"type": "withdraw", "seq": 4, "offer_ids": "c"})
        assert reply["code"] == "invalid_message"
        assert set(await book_of(book)) == {"acme/c"}
        await market.market.replica.sync()
        assert market.market.replica.index.get("acme/b") is None


async def test_a_replayed_or_out_of_order_seq_changes_nothing(market: Marketplace) -> None:
    token = await token_for(market)
    book = market.market.book
    async with bidder(market.url, token, "acme") as ws:
        assert await quote(ws, 5, offer("o1")) == {"type": "ack", "seq": 5}
        before = await book_of(book)
        for seq in (5, 3):
            reply = await quote(ws, seq, offer("o1", "0.10"), offer("o2"))
            assert reply == {
                "type": "error",
                "code": "bad_seq",
                "message": f"seq {seq} is not greater than the last seq 5",
            }
        reply = await ask(ws, {"type": "withdraw", "seq": 4, "offer_ids": ["o1"]})
        assert reply["code"] == "bad_seq"
        for wrong in (0, "6", None, 2**53, 6.0, True):
            reply = await quote(ws, wrong, offer("o1", "0.10"))
            assert reply["code"] == "invalid_message", wrong
        assert await ask(ws, {"type": "quote", "seq": 6, "offers": {}}) == {
            "type": "error", "code": "invalid_message", "message": "quote.offers must be a list"
        }  # fmt: skip
        assert await book_of(book) == before
        assert await quote(ws, 6, offer("o2")) == {"type": "ack", "seq": 6}  # 6 was never used


async def test_heartbeats_keep_offers_alive_while_a_silent_session_expires(
    market: Marketplace,
) -> None:
    token = await token_for(market)
    book = market.market.book
    async with (
        bidder(market.url, token, "acme") as beating,
        bidder(market.url, token, "acme") as requoting,
        bidder(market.url, token, "acme") as quiet,
    ):
        await quote(beating, 1, offer("kept", ttl_ms=1000))
        await quote(requoting, 1, offer("requoted", ttl_ms=1000))
        await quote(quiet, 1, offer("silent", ttl_ms=1000))
        started = time.monotonic()

        async def keep_alive() -> None:
            for seq in range(2, 100):  # bounded; cancelled below
                await asyncio.sleep(0.25)
                await send(beating, {"type": "heartbeat"})
                assert await quote(requoting, seq) == {"type": "ack", "seq": seq}

        task = asyncio.create_task(keep_alive())
        try:

            async def silent_gone() -> bool:
                return "acme/silent" not in await book_of(book)

            await until(silent_gone, timeout=4)
            assert time.monotonic() - started >= 0.9
            await asyncio.sleep(max(0, started + 1.6 - time.monotonic()))  # well past the ttl
            assert set(await book_of(book)) == {"acme/kept", "acme/requoted"}
            await silent(beating)  # a heartbeat has no answer
            assert not task.done(), task  # the keep-alive loop met no error
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # The sweep (every second) takes it out of the replica, and so out of clearing.
        index = market.market.replica.index
        await market.market.replica.wait_for(lambda: index.get("acme/silent") is None, 3)
        assert index.get("acme/kept") is not None


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_offers_are_cancelled_when_the_session_ends(market: Marketplace, how: str) -> None:
    token = await token_for(market)
    book = market.market.book
    async with bidder(market.url, token, "acme") as other:
        async with bidder(market.url, token, "acme") as ws:
            await quote(
                ws, 1, offer("mine"), offer("shared"), offer("small", model="llama-3.1-8b-instruct")
            )
            assert await quote(other, 1, offer("shared", "0.45")) == {"type": "ack", "seq": 1}
            if how == "abort":
                ws.transport.abort()  # no close frame: the server notices the TCP connection drop

        await until_book(book, {"acme/shared"})  # the other session re-quoted it: owns it now
        await until_book(book, set(), "llama-3.1-8b-instruct")
        assert (await book_of(book))["acme/shared"].input_price == parse_price("0.45")


# -- malformed traffic and limits ----------------------------------------------------------------
async def test_malformed_messages_get_an_error_and_the_session_goes_on(
    market: Marketplace,
) -> None:
    token = await token_for(market)
    async with bidder(market.url, token, "acme") as ws:
        for frame, code in (
            ("not json", "invalid_message"),
            ("[1, 2]", "invalid_message"),
            ('{"type": "quote", "seq": NaN, "offers": []}', "invalid_message"),
            ('{"type": "heartbeat", "x": Infinity}', "invalid_message"),
            ("", "invalid_message"),
            ('{"type": "bid"}', "unknown_type"),
            ('{"seq": 1}', "unknown_type"),
            ('{"type": 5}', "unknown_type"),
            (b"\xff\xfe", "invalid_message"),
        ):
            reply = await ask(ws, frame)
            assert (reply["type"], reply["code"]) == ("error", code), frame
        binary = json.dumps({"type": "quote", "seq": 1, "offers": [offer("o1")]}).encode()
        assert await ask(ws, binary) == {"type": "ack", "seq": 1}  # a binary frame of JSON
        assert set(await book_of(market.market.book)) == {"acme/o1"}


async def test_offers_per_provider_are_limited(start_market: MarketFactory) -> None:
    market = await start_market(max_offers_per_provider=2)
    token = await token_for(market)
    async with bidder(market.url, token, "acme") as ws:
        reply = await quote(ws, 1, offer("a"), offer("b"), offer("c"))
        assert reply["errors"] == [
            {"offer_id": "c", "message": "the provider already has 2 live offers, the limit"}
        ]
        assert await quote(ws, 2, offer("a", "0.45")) == {"type": "ack", "seq": 2}  # no room
        assert await ask(ws, {"type": "withdraw", "seq": 3, "offer_ids": ["b"]}) == {
            "type": "ack", "seq": 3
        }  # fmt: skip
        assert await quote(ws, 4, offer("c")) == {"type": "ack", "seq": 4}
        assert set(await book_of(market.market.book)) == {"acme/a", "acme/c"}


async def test_an_oversized_message_gets_an_error(start_market: MarketFactory) -> None:
    market = await start_market(max_message_bytes=2048)
    token = await token_for(market)
    async with bidder(market.url, token, "acme") as ws:
        big = {"type": "quote", "seq": 1, "offers": [offer(f"o{i}") for i in range(20)]}
        wide = {"type": "quote", "seq": 1, "offers": [offer("o1", region="€" * 700)]}
        assert len(json.dumps(wide, ensure_ascii=False)) < 2048  # but over 2048 UTF-8 bytes
        for message in (json.dumps(big), json.dumps(wide, ensure_ascii=False)):
            assert await ask(ws, message) == {
                "type": "error",
                "code": "message_too_large",
                "message": "a message may be at most 2048 bytes",
            }
        assert await book_of(market.market.book) == {}
        assert await quote(ws, 1, offer("o1")) == {"type": "ack", "seq": 1}


async def test_messages_over_the_rate_limit_are_dropped_with_one_error(
    start_market: MarketFactory,
) -> None:
    market = await start_market(max_messages_per_second=5)
    token = await token_for(market)
    async with bidder(market.url, token, "acme") as ws:  # hello is message 1 of the window
        for seq in range(1, 11):
            await send(ws, {"type": "quote", "seq": seq, "offers": [offer(f"o{seq}")]})
        replies = [await recv(ws) for _ in range(5)]
        await silent(ws, 0.3)
        assert replies == [{"type": "ack", "seq": s} for s in range(1, 5)] + [
            {
                "type": "error",
                "code": "rate_limited",
                "message": "over the message rate limit; the message was dropped",
            }
        ]
        assert set(await book_of(market.market.book)) == {f"acme/o{s}" for s in range(1, 5)}
        await asyncio.sleep(1.0)  # the next one-second window
        assert await quote(ws, 5, offer("o5")) == {"type": "ack", "seq": 5}  # 5 was dropped
