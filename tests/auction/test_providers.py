"""The provider registry against a real Redis: registration, bidder tokens, secrets, removal."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from auction.errors import InvalidApiKey, InvalidRequest, NotFound
from auction.keys import Keys
from auction.providers import Providers


@pytest.fixture
def providers(redis_client: aioredis.Redis, key_prefix: str) -> Providers:
    return Providers(redis_client, Keys(key_prefix))


async def test_registration_returns_a_token_that_authenticates_its_provider_alone(
    providers: Providers,
) -> None:
    acme, acme_token = await providers.add("acme", "openai", "http://127.0.0.1:9000/v1/", "sk-up")
    slow, slow_token = await providers.add("slowco", "anthropic", "https://127.0.0.1:9001", None)
    assert acme_token.startswith("bt-") and len(acme_token) >= len("bt-") + 32
    assert acme.base_url == "http://127.0.0.1:9000/v1"  # the trailing slash is dropped
    assert (acme.api, acme.api_key_set, slow.api_key_set) == ("openai", True, False)
    assert await providers.authenticate(acme_token) == acme
    assert await providers.authenticate(slow_token) == slow
    assert await providers.get("acme") == acme
    assert await providers.get("nobody") is None


@pytest.mark.parametrize("bad", [None, "", "bt-", "bt-" + "x" * 43, "sk-auc-abc"])
async def test_wrong_bidder_tokens_are_refused(providers: Providers, bad: str | None) -> None:
    await providers.add("acme", "openai", "http://127.0.0.1:9000/v1")
    with pytest.raises(InvalidApiKey):
        await providers.authenticate(bad)


async def test_secrets_never_leave_through_listings(
    providers: Providers, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    _, token = await providers.add("acme", "gemini", "http://127.0.0.1:9000", "upstream-secret")
    listed = await providers.list()
    shown = repr(listed) + json.dumps([p.describe() for p in listed])
    shown += repr(await providers.get("acme"))
    assert "upstream-secret" not in shown and token not in shown
    assert listed[0].describe()["api_key_set"] is True
    # The token itself is stored nowhere, only its hash.
    for key in [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")]:
        assert token not in repr(await redis_client.hgetall(key))
    assert await providers.credentials("acme") == ("http://127.0.0.1:9000", "upstream-secret")


@pytest.mark.parametrize(
    ("name", "api", "url", "param"),
    [
        ("Acme", "openai", "http://127.0.0.1/v1", "name"),
        ("", "openai", "http://127.0.0.1/v1", "name"),
        ("-acme", "openai", "http://127.0.0.1/v1", "name"),
        ("a" * 65, "openai", "http://127.0.0.1/v1", "name"),
        ("acme", "cohere", "http://127.0.0.1/v1", "api"),
        ("acme", "openai", "ftp://127.0.0.1/v1", "base_url"),
        ("acme", "openai", "127.0.0.1:8000", "base_url"),
        ("acme", "openai", "http://", "base_url"),
        ("acme", "openai", "http://user:pw@127.0.0.1/v1", "base_url"),
        ("acme", "openai", "http://127.0.0.1/v1?x=1", "base_url"),
        ("acme", "openai", "http://127.0.0.1/v 1", "base_url"),
    ],
)
async def test_registrations_are_validated(
    providers: Providers, name: str, api: str, url: str, param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        await providers.add(name, api, url)  # type: ignore[arg-type]  # deliberately wrong
    assert info.value.param == param
    assert await providers.list() == []


async def test_a_name_is_registered_once(providers: Providers) -> None:
    _, token = await providers.add("acme", "openai", "http://127.0.0.1:9000/v1", "k1")
    with pytest.raises(InvalidRequest, match="already exists"):
        await providers.add("acme", "anthropic", "http://127.0.0.1:9999", "k2")
    assert await providers.credentials("acme") == ("http://127.0.0.1:9000/v1", "k1")
    assert (await providers.authenticate(token)).api == "openai"


async def test_removal_drops_the_token_and_tells_every_process(
    providers: Providers, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    _, token = await providers.add("acme", "openai", "http://127.0.0.1:9000/v1", "k1")
    await providers.add("other", "openai", "http://127.0.0.1:9001/v1")
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(Keys(key_prefix).control_channel())
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        assert await providers.remove("acme") is True
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    assert json.loads(message["data"]) == {"type": "provider_removed", "provider": "acme"}
    with pytest.raises(InvalidApiKey):
        await providers.authenticate(token)
    with pytest.raises(NotFound):
        await providers.credentials("acme")
    assert await providers.remove("acme") is False
    assert [p.name for p in await providers.list()] == ["other"]
    assert await redis_client.hlen(Keys(key_prefix).provider_tokens()) == 1


async def test_a_rotated_token_replaces_the_old_one(
    providers: Providers, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    record, old = await providers.add("acme", "openai", "http://127.0.0.1:9000/v1", "k1")
    new = await providers.rotate_token("acme")
    assert await redis_client.hlen(Keys(key_prefix).provider_tokens()) == 1
    assert new != old and new.startswith("bt-")
    assert await providers.authenticate(new) == record
    with pytest.raises(InvalidApiKey):
        await providers.authenticate(old)
    assert await providers.credentials("acme") == ("http://127.0.0.1:9000/v1", "k1")
    with pytest.raises(NotFound):
        await providers.rotate_token("nobody")
