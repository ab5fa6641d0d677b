"""Passive health against a real Redis: cool-downs, probes, observed latency, sharing."""

from __future__ import annotations

import random

import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from auction.health import Health, LiveView
from auction.keys import Keys
from auction.settings import Settings
from clearing.money import PriceMicros
from clearing.types import Offer, OfferLive

NOW = 1_800_000_000_000
OFFER = Offer(
    provider="acme", offer_id="a1", model="m", input_price=PriceMicros(1),
    output_price=PriceMicros(1), cached_input_price=PriceMicros(1), concurrency=4,
    quality=50, context_window=1000, max_output_tokens=100, features=frozenset(), seq=1,
    ttft_ms=500, output_tokens_per_s=20,
)  # fmt: skip


def health_for(client: aioredis.Redis, prefix: str, **fields: object) -> Health:
    values: dict[str, object] = {
        "redis_url": "redis://unused",
        "failures_to_cool_down": 3,
        "cool_down_ms": 10_000,
        "probe_share": 0.0,
        "observed_after_requests": 2,
        **fields,
    }
    return Health(client, Keys(prefix), Settings.model_validate(values), rng=random.Random(7))


async def test_failures_in_a_row_start_a_cool_down(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    health = health_for(redis_client, key_prefix)
    for _ in range(2):
        await health.failed(OFFER, NOW)
    assert health.view({}, NOW).get(OFFER.ref) is None  # two failures: still healthy
    await health.failed(OFFER, NOW)
    cooling = health.view({}, NOW + 9_999).get(OFFER.ref)
    assert cooling is not None and cooling.cooling_down
    assert health.view({}, NOW + 10_000).get(OFFER.ref) is None  # the cool-down is over
    await health.failed(OFFER, NOW + 10_000)  # a failed probe starts it again
    assert health.view({}, NOW + 15_000)[OFFER.ref].cooling_down
    await health.succeeded(OFFER, NOW + 15_000)  # a success ends it
    assert health.view({}, NOW + 15_000).get(OFFER.ref) is None


async def test_a_share_of_requests_still_probes_a_cooling_offer(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    health = health_for(redis_client, key_prefix, probe_share=0.25, failures_to_cool_down=1)
    await health.failed(OFFER, NOW)
    views = [health.view({}, NOW + 1) for _ in range(400)]
    probes = sum(1 for view in views if view.get(OFFER.ref) is None)
    assert 60 <= probes <= 140  # about a quarter
    view = views[0]
    assert view.get(OFFER.ref) == view.get(OFFER.ref)  # drawn once per view


async def test_observed_latency_replaces_the_declared_after_enough_streams(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    health = health_for(redis_client, key_prefix)
    await health.succeeded(OFFER, NOW, ttft_ms=100, output_tokens_per_s=50.0)
    assert health.view({}, NOW).get(OFFER.ref) is None  # one observation is not enough
    await health.succeeded(OFFER, NOW, ttft_ms=200, output_tokens_per_s=100.0)
    base = {OFFER.ref: OfferLive(in_flight=3, tokens_this_minute=10)}
    live = health.view(base, NOW)[OFFER.ref]
    assert live == OfferLive(
        in_flight=3, tokens_this_minute=10, observed_ttft_ms=120, observed_output_tokens_per_s=60
    )


async def test_other_processes_see_the_state_after_a_refresh(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    here = health_for(redis_client, key_prefix, failures_to_cool_down=1)
    there = health_for(redis_client, key_prefix, failures_to_cool_down=1)
    await here.failed(OFFER, NOW)
    assert there.view({}, NOW).get(OFFER.ref) is None
    assert await there.refresh(["m"]) == 1
    assert there.view({}, NOW)[OFFER.ref].cooling_down
    assert await there.refresh(["m"]) == 0  # only changes are read again
    await here.succeeded(OFFER, NOW)
    await there.refresh(["m", "other-model"])
    assert there.view({}, NOW).get(OFFER.ref) is None


@settings(max_examples=50, deadline=None)
@given(
    refs=st.lists(st.sampled_from(["a/1", "a/2", "b/1"]), unique=True),
    base_refs=st.lists(st.sampled_from(["a/1", "c/9"]), unique=True),
)
def test_a_view_iterates_every_ref_once(refs: list[str], base_refs: list[str]) -> None:
    from auction.health import HealthState

    states = {ref: HealthState(fails=1) for ref in refs}
    base = {ref: OfferLive(in_flight=1) for ref in base_refs}
    view = LiveView(base, states, NOW, 5, lambda: False)
    assert sorted(view) == sorted(set(refs) | set(base_refs))
    assert len(view) == len(set(refs) | set(base_refs))
    for ref in base_refs:
        assert view[ref] == base[ref]  # one failure changes nothing the engine sees


async def test_a_plain_success_is_recorded_only_when_it_ends_a_streak(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    health = health_for(redis_client, key_prefix)
    assert health.success(OFFER, NOW) is None  # nothing observed, nothing to end
    assert health.success(OFFER, NOW, ttft_ms=120) is not None  # an observation is news
    await health.failed(OFFER, NOW)
    assert health.success(OFFER, NOW) is not None  # ends the streak of one failure
    await health.succeeded(OFFER, NOW)
    assert health.success(OFFER, NOW) is None
    state = await redis_client.hmget(Keys(key_prefix).health(OFFER.model, OFFER.ref), "fails")
    assert state == [b"0"]
