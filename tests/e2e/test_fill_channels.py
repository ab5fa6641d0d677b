"""A process reads a provider's fills only while it holds a session of that provider."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.e2e.bidder_kit import bidder, token_for, until
from tests.e2e.conftest import Marketplace


async def subscribers(redis: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_fill_channels_follow_the_sessions_this_process_holds(market: Marketplace) -> None:
    redis, keys = market.market.redis, market.market.keys
    acme, other = keys.fills_channel("acme"), keys.fills_channel("other")
    token = await token_for(market, "acme")
    assert await subscribers(redis, acme) == 0  # no session: no fills are read here
    async with bidder(market.url, token, "acme"):
        assert await subscribers(redis, acme) == 1  # subscribed by the time of the welcome
        async with bidder(market.url, token, "acme"):
            assert await subscribers(redis, acme) == 1  # one subscription serves every session
        assert await subscribers(redis, acme) == 1  # the first session still lives
        assert await subscribers(redis, other) == 0

    async def unsubscribed() -> bool:  # the server notices the close, then unsubscribes
        return await subscribers(redis, acme) == 0

    await until(unsubscribed)
