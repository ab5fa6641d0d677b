"""The admin API and its CLI mirror, against a running marketplace."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from auction.admin_cli import COMMANDS
from tests.e2e.conftest import ADMIN_TOKEN, Marketplace, running_market, settings_for


@pytest.fixture
async def market(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> AsyncIterator[Marketplace]:
    async with running_market(settings_for(redis_url, key_prefix)) as handle:
        yield handle


async def test_admin_routes_need_the_admin_token(market: Marketplace) -> None:
    async with httpx.AsyncClient(base_url=market.url) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            reply = await http.get("/v1/admin/keys", headers=headers)
            assert reply.status_code == 401
            assert reply.json()["error"]["code"] == "invalid_api_key"
        reply = await http.post("/v1/admin/keys", json={"name": "x", "budget_usd": "1"})
        assert reply.status_code == 401


async def test_without_a_configured_token_the_admin_api_is_disabled(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    async with running_market(settings_for(redis_url, key_prefix, admin_token=None)) as m:
        reply = await m.admin.get("/v1/admin/keys")
    assert reply.status_code == 401
    assert "disabled" in reply.json()["error"]["message"]


async def test_keys_lifecycle(market: Marketplace) -> None:
    admin = market.admin
    created = await admin.post(
        "/v1/admin/keys", json={"name": "alice", "budget_usd": "2.5", "period": "month"}
    )
    assert created.status_code == 200
    body = created.json()
    assert body["name"] == "alice" and body["api_key"].startswith("sk-auc-")
    assert (body["budget_usd"], body["period"]) == ("2.500000", "month")
    again = await admin.post("/v1/admin/keys", json={"name": "alice", "budget_usd": 1})
    assert again.status_code == 400 and again.json()["error"]["param"] == "name"
    bad = await admin.post("/v1/admin/keys", json={"name": "bob", "budget_usd": "-1"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "budget_usd"
    budget = await admin.post("/v1/admin/keys/alice/budget", json={"budget_usd": 7})
    assert budget.json()["budget_usd"] == "7.000000"
    listed = (await admin.get("/v1/admin/keys")).json()["data"]
    assert [(k["name"], k["budget_usd"], k["spent_usd"]) for k in listed] == [
        ("alice", "7.000000", "0.000000")
    ]
    assert "api_key" not in listed[0]
    revoked = await admin.post("/v1/admin/keys/alice/revoke")
    assert revoked.json()["revoked"] is True
    missing = await admin.post("/v1/admin/keys/nobody/revoke")
    assert missing.status_code == 404


async def test_removing_a_provider_withdraws_its_offers(market: Marketplace) -> None:
    admin = market.admin
    token = await market.add_provider("acme", "http://127.0.0.1:9/v1")
    assert token.startswith("bt-")
    listed = (await admin.get("/v1/admin/providers")).json()["data"]
    assert [(p["provider"], p["api"], p["api_key_set"]) for p in listed] == [
        ("acme", "openai", False)
    ]
    await market.post(market.offer("acme", "a1"), market.offer("acme", "a2"))
    assert len(market.market.replica.index) == 2
    removed = await admin.delete("/v1/admin/providers/acme")
    assert removed.json() == {"provider": "acme", "removed": True, "offers_withdrawn": 2}
    await market.market.replica.sync()
    assert len(market.market.replica.index) == 0
    assert (await admin.delete("/v1/admin/providers/acme")).status_code == 404
    bad = await admin.post(
        "/v1/admin/providers", json={"name": "x", "api": "cobol", "base_url": "http://h/v1"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "api"


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    parser = argparse.ArgumentParser(prog="auction")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (summary, add_arguments, handler) in COMMANDS.items():
        command = sub.add_parser(name, help=summary)
        add_arguments(command)
        command.set_defaults(handler=handler)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    out = capsys.readouterr().out
    return code, json.loads(out) if out else None


async def test_the_cli_mirrors_the_admin_api(
    market: Marketplace, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--url", market.url, "--admin-token", ADMIN_TOKEN]

    async def cli(*argv: str) -> tuple[int, Any]:
        return await asyncio.to_thread(_run_cli, [*argv, *common], capsys)

    code, key = await cli("keys", "create", "carol", "--budget", "3", "--period", "day")
    assert code == 0 and key["api_key"].startswith("sk-auc-")
    code, _ = await cli("keys", "set-budget", "carol", "--budget", "4")
    assert code == 0
    code, keys = await cli("keys", "list")
    assert [(k["name"], k["budget_usd"], k["period"]) for k in keys["data"]] == [
        ("carol", "4.000000", "day")
    ]
    code, provider = await cli(
        "providers", "add", "acme", "--api", "openai", "--base-url", "http://127.0.0.1:9/v1"
    )
    assert code == 0 and provider["bidder_token"].startswith("bt-")
    code, providers = await cli("providers", "list")
    assert [p["provider"] for p in providers["data"]] == ["acme"]
    code, removed = await cli("providers", "remove", "acme")
    assert code == 0 and removed["removed"] is True
    code, revoked = await cli("keys", "revoke", "carol")
    assert code == 0 and revoked["revoked"] is True
    code, _ = await cli("keys", "revoke", "nobody")
    assert code == 1
