"""Reliability fixtures: a private Redis per test that can be stopped, killed and restarted."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from auction.accounts import Accounts
from auction.catalogue import load_catalogue
from auction.keys import Keys
from auction.ledger import Ledger
from auction.serve import local_process
from auction.settings import Settings
from clearing.money import parse_price
from clearing.types import Offer
from tests.e2e.conftest import ADMIN_TOKEN, _wait_ready, free_port
from tests.e2e.conftest import start_market as start_market  # the e2e fixture, shared here


class PrivateRedis:
    """A redis-server of this test's own on a loopback port, persisted with AOF in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not on PATH"
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, "the private Redis exited"
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=self.port, socket_timeout=0.5)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            time.sleep(0.02)
        raise AssertionError("the private Redis did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM: the AOF is complete)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- marketplace processes that a test may SIGKILL -------------------------------------------------
@contextlib.contextmanager
def processes(
    settings: Settings, count: int
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """Like `server_processes`, but yields (process, base URL) so a test can kill one."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(count):
            port = free_port()
            command, env = local_process(settings, port)
            started.append((subprocess.Popen(command, env=env), f"http://127.0.0.1:{port}"))
        for proc, url in started:
            _wait_ready(proc, url)
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


CATALOGUE = load_catalogue(None, "extend")


def offer_for(
    provider: str, offer_id: str, model: str, concurrency: int = 16, **kw: object
) -> Offer:
    """An offer at $0.50/$1.00 per Mtok with the catalogue's facts for `model`."""
    half, one = parse_price("0.50"), parse_price("1.00")
    offer = CATALOGUE[model].offer(
        provider, offer_id, half, one, half, concurrency=concurrency, ttl_ms=120_000
    )
    return dataclasses.replace(offer, **kw)  # type: ignore[arg-type]  # test-only overrides


async def admin_setup(
    url: str, providers: dict[str, str], keys: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Register providers (name -> base URL) and keys (name -> budget USD) through the admin API.

    Returns (provider name -> bidder token, key name -> API key).
    """
    tokens: dict[str, str] = {}
    api_keys: dict[str, str] = {}
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as admin:
        for name, base in providers.items():
            body = {"name": name, "api": "openai", "base_url": base}
            reply = await admin.post("/v1/admin/providers", json=body)
            assert reply.status_code == 200, reply.text
            tokens[name] = reply.json()["bidder_token"]
        for name, budget in keys.items():
            body = {"name": name, "budget_usd": budget, "period": "total"}
            reply = await admin.post("/v1/admin/keys", json=body)
            assert reply.status_code == 200, reply.text
            api_keys[name] = reply.json()["api_key"]
    return tokens, api_keys


@dataclass(frozen=True)
class Books:
    """What the ledger and the budgets say, read straight from Redis."""

    ledger: dict[str, int]  # clearing id -> cost nanos
    settled: dict[str, int]  # clearing id -> charged nanos (from the settled hold marks)
    spent: dict[str, int]  # key id -> spent nanos
    held: dict[str, int]  # key id -> live holds nanos


async def read_books(redis: aioredis.Redis, keys: Keys, key_ids: list[str]) -> Books:
    ledger_reader = Ledger(redis, keys)
    accounts = Accounts(redis, keys)
    ledger = {e.clearing_id: int(e.cost) async for _, e in ledger_reader.read()}
    settled: dict[str, int] = {}
    spent: dict[str, int] = {}
    held: dict[str, int] = {}
    for key_id in key_ids:
        for hold_id, charged in (await redis.hgetall(keys.settled_holds(key_id))).items():
            name = hold_id.decode() if isinstance(hold_id, bytes) else hold_id
            clearing_id = name.rsplit(".h", 1)[0]
            assert clearing_id not in settled, "two settled holds for one clearing"
            settled[clearing_id] = int(charged)
        snapshot = await accounts.account(key_id)
        spent[key_id], held[key_id] = int(snapshot.spent), int(snapshot.held)
    return Books(ledger, settled, spent, held)


async def key_ids(redis: aioredis.Redis, keys: Keys, names: list[str]) -> list[str]:
    accounts = Accounts(redis, keys)
    found = [await accounts.find(name) for name in names]
    return [record.key_id for record in found if record is not None]


def assert_reconciled(books: Books) -> None:
    """No half-written settlement: ledger and settled holds name the same clearings and sums."""
    assert set(books.ledger) == set(books.settled), "a settlement is half-written"
    for clearing_id, cost in books.ledger.items():
        assert books.settled[clearing_id] == cost, f"{clearing_id}: ledger and budget disagree"
    assert sum(books.spent.values()) == sum(books.ledger.values()), "spent is not the ledger"
