"""Reliability under load: two server processes, faulty providers, then every promise reconciled."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.book import Book
from auction.catalogue import default_catalogue
from auction.gateway_bench import _free_port, _process, _wait_http
from auction.keys import Keys
from auction.ledger import Ledger
from auction.serve import local_process
from auction.settings import Settings
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider
from clearing.money import PriceMicros, parse_usd
from clearing.types import Offer

ADMIN_TOKEN = "reliability-bench-admin"
MODEL = "llama-3.1-70b-instruct"
TIGHT_BUDGET = "0.0002"  # key 0's budget: a few requests' worth, so budgets do bind


@dataclass(frozen=True, slots=True)
class LoadSize:
    requests: int = 500
    keys: int = 20
    offers: int = 30
    fault_rate: float = 0.3  # not money: the share of provider calls that fail
    seed: int = 1
    servers: int = 2


@contextlib.contextmanager
def _servers(redis_url: str, prefix: str, size: LoadSize) -> Iterator[list[str]]:
    settings = Settings.model_validate(
        {"redis_url": redis_url, "key_prefix": prefix, "admin_token": ADMIN_TOKEN,
         "rate_limit_per_minute": 10**6, "log_level": "warning", "failover_depth": size.offers,
         # 30% random faults are not a sick provider: keep every offer in play
         "failures_to_cool_down": 10**6, "default_timeout_ms": 20_000}
    )  # fmt: skip
    ports = [_free_port() for _ in range(size.servers)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(_process(*local_process(settings, port)))
        yield [f"http://127.0.0.1:{port}" for port in ports]


def _offers(size: LoadSize, concurrency: int) -> list[Offer]:
    info = default_catalogue()[MODEL]
    rng = random.Random(size.seed)
    return [
        info.offer(
            f"p{i}",
            "o",
            PriceMicros(rng.randint(100, 900) * 1000),
            PriceMicros(rng.randint(500, 1500) * 1000),
            PriceMicros(100_000),
            concurrency=concurrency,
            ttl_ms=600_000,
        )
        for i in range(size.offers)
    ]


async def _setup(
    url: str, sims: list[SimulatedProvider], size: LoadSize, redis: aioredis.Redis, prefix: str
) -> tuple[list[str], list[Offer]]:
    """Providers, offers and keys; returns the API keys (key 0 has the tight budget)."""
    concurrency = max(4, -(-size.requests * 5 // (size.offers * 4)))  # 1.25 × requests in all
    offers = _offers(size, concurrency)
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    api_keys: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as admin:
        for offer, sim in zip(offers, sims, strict=True):
            sim.reconfigure(_sim_config(size, sim, offer.concurrency))
            body = {"name": offer.provider, "api": "openai", "base_url": sim.base_url}
            (await admin.post("/v1/admin/providers", json=body)).raise_for_status()
        for i in range(size.keys):
            budget = TIGHT_BUDGET if i == 0 else "100"
            body = {"name": f"k{i}", "budget_usd": budget, "period": "total"}
            reply = await admin.post("/v1/admin/keys", json=body)
            reply.raise_for_status()
            api_keys.append(reply.json()["api_key"])
    await Book(redis, Keys(prefix)).upsert("reliability-load", offers)
    return api_keys, offers


def _sim_config(size: LoadSize, sim: SimulatedProvider, capacity: int) -> SimConfig:
    seed = size.seed * 1000 + sim.config.seed
    return SimConfig(
        capacity=capacity, fault_rate=size.fault_rate, seed=seed, ttft_ms=5, retry_after_s=0
    )


async def _until_served(urls: list[str], api_key: str, offers: int) -> None:
    auth = {"authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(headers=auth, timeout=5) as http:
        for url in urls:
            for _ in range(400):  # bounded: 20 s for each server's replica to load the offers
                reply = await http.get(url + "/v1/models")
                data = reply.json().get("data", []) if reply.status_code == 200 else []
                if any(m["id"] == MODEL and m["auction"]["offers"] >= offers for m in data):
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{url} never saw the offers")


@dataclass(slots=True)
class Outcome:
    status: int
    code: str | None
    cost: int  # nano-USD the answer said it cost
    key: int
    clearing_id: str | None


async def _one(http: httpx.AsyncClient, url: str, key: str, n: int, at: int) -> Outcome:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"q{n}"}], "max_tokens": 16}
    reply = await http.post(
        url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    clearing_id = reply.headers.get("x-auction-clearing-id")
    if reply.status_code == 200:
        cost = int(parse_usd(reply.headers["x-auction-cost-usd"]))
        return Outcome(200, None, cost, at, clearing_id)
    code = reply.json().get("error", {}).get("code")
    return Outcome(reply.status_code, code, 0, at, clearing_id)


async def _attempts(http: httpx.AsyncClient, url: str, key: str, clearing_id: str) -> int:
    """How many of the 502's qualifying candidates were NOT attempted (0 when all were)."""
    reply = await http.get(
        f"{url}/v1/clearings/{clearing_id}", headers={"authorization": f"Bearer {key}"}
    )
    record = reply.json()
    # Offers busy or cooling at clearing time did not qualify; every one that did must be tried.
    return len(record.get("candidates", [])) - len(record.get("attempts", []))


async def run_load(redis_url: str, prefix: str, size: LoadSize) -> dict[str, object]:
    """Run the load and return the figures; `violations` lists every broken promise."""
    redis = aioredis.Redis.from_url(redis_url)
    sims = [SimulatedProvider("openai", SimConfig(seed=i)) for i in range(size.offers)]
    try:
        for sim in sims:
            await sim.start()
        with _servers(redis_url, prefix, size) as urls:
            for url in urls:
                await _wait_http(url + "/readyz")
            api_keys, offers = await _setup(urls[0], sims, size, redis, prefix)
            await _until_served(urls, api_keys[1], size.offers)
            for sim in sims:
                sim.stats.reset()
            limits = httpx.Limits(max_connections=size.requests + 10)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                outcomes = await asyncio.gather(
                    *(
                        _one(http, urls[n % len(urls)], api_keys[n % size.keys], n, n % size.keys)
                        for n in range(size.requests)
                    )
                )
                failed = [o for o in outcomes if o.status == 502 and o.clearing_id]
                tried = [
                    await _attempts(http, urls[0], api_keys[o.key], str(o.clearing_id))
                    for o in failed
                ]
            return await _reconcile(redis, Keys(prefix), size, outcomes, tried, sims, offers)
    finally:
        for sim in sims:
            await sim.stop()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i : i + 1000])
        await redis.aclose()


async def _reconcile(
    redis: aioredis.Redis,
    keys: Keys,
    size: LoadSize,
    outcomes: list[Outcome],
    tried: list[int],
    sims: list[SimulatedProvider],
    offers: list[Offer],
) -> dict[str, object]:
    violations: list[str] = []
    for o in outcomes:
        expected = o.status == 200 or (o.status == 402 and o.key == 0) or o.status == 502
        if not expected:
            violations.append(f"request for key {o.key}: {o.status} {o.code}")
    violations += [f"a 502 with {n} qualifying offers not tried" for n in tried if n > 0]
    ledger = [entry async for _, entry in Ledger(redis, keys).read()]
    ledger_total = sum(int(e.cost) for e in ledger)
    charged = sum(o.cost for o in outcomes)
    if charged != ledger_total:
        violations.append(f"charges {charged} != ledger {ledger_total}")
    accounts = Accounts(redis, keys)
    spent_total = 0
    for i in range(size.keys):
        record = await accounts.find(f"k{i}")
        assert record is not None
        snap = await accounts.account(record.key_id)
        spent_total += int(snap.spent)
        if snap.spent > snap.key.budget or snap.held:
            violations.append(
                f"key k{i}: spent {snap.spent} of {snap.key.budget}, held {snap.held}"
            )
    if spent_total != ledger_total:
        violations.append(f"spent {spent_total} != ledger {ledger_total}")
    for sim, offer in zip(sims, offers, strict=True):
        if sim.stats.over_capacity_events or sim.stats.max_in_flight > offer.concurrency:
            violations.append(f"{offer.provider}: {sim.stats.max_in_flight} in flight")
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    return {
        "requests": size.requests,
        "keys": size.keys,
        "offers": size.offers,
        "servers": size.servers,
        "fault_rate": size.fault_rate,
        "faults_injected": sum(s.stats.faults_injected for s in sims),
        "provider_calls": sum(s.stats.requests for s in sims),
        "statuses": statuses,
        "ledger_entries": len(ledger),
        "charged_nanos": charged,
        "ledger_nanos": ledger_total,
        "max_in_flight_over_capacity": max(
            s.stats.max_in_flight - o.concurrency for s, o in zip(sims, offers, strict=True)
        ),
        "violations": violations,
    }


async def bench_reliability(redis_url: str, prefix: str, quick: bool) -> dict[str, object]:
    """The full load (500 requests, 20 keys, 30 offers); `quick` runs the CI size."""
    size = LoadSize(100, 5, 8) if quick else LoadSize()
    return await run_load(redis_url, prefix, size)
