"""`auction demo` smoke test: the whole demo market for a few seconds on the test's Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from auction.demo import run_demo
from auction.keys import Keys
from tests.e2e.conftest import free_port, settings_for


async def test_the_demo_trades_and_answers_every_request(
    redis_url: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(redis_url, key_prefix, port=free_port())
    tally = await asyncio.wait_for(
        run_demo(settings, rate=8.0, live=False, duration_s=4.0), timeout=30
    )
    assert tally.trade_count > 0 and tally.traded_nanos > 0  # seen on the price feed
    assert tally.ok > 0 and tally.failed == 0
    # Unanswered: only what was still in flight at the stop (8/s, each well under a second).
    assert tally.sent - tally.ok <= 8
    assert tally.statuses == {200: tally.ok}
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{settings.port}/v1" in out
    assert f"stopped: {tally.trade_count} trades, {tally.ok} demo requests served." in out
    # It ran under the caller's prefix (which the fixture deletes), not the demo's own.
    assert await redis_client.exists(Keys(key_prefix).providers()) == 1
