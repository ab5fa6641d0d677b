"""The lean HTTP transport under httpx, against simulated providers on real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from auction.transport import LeanTransport
from auction.ttlcache import TtlCache
from bidders.simulated.behaviour import SimConfig
from bidders.simulated.server import SimulatedProvider

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=None) as client:
        yield client


async def test_whole_answers_reuse_one_connection(http: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai") as sim:
        url = sim.base_url + "/chat/completions"
        for _ in range(5):
            reply = await http.post(url, json=BODY)
            assert reply.status_code == 200
            assert reply.json()["usage"]["completion_tokens"] == 8
        assert sim.stats.requests == 5
        transport = http._transport
        assert isinstance(transport, LeanTransport)
        assert sum(len(idle) for idle in transport._idle.values()) == 1


async def test_a_chunked_stream_arrives_whole(http: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", SimConfig(output_tokens_per_s=500)) as sim:
        body = {**BODY, "stream": True}
        async with http.stream("POST", sim.base_url + "/chat/completions", json=body) as reply:
            assert reply.status_code == 200
            text = b"".join([piece async for piece in reply.aiter_bytes()]).decode()
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert len([json.loads(e) for e in events[:-1]]) >= 8


async def test_errors_are_httpx_errors(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY)
    async with SimulatedProvider("openai") as sim:
        sim.faults.add("disconnect")
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(sim.base_url + "/chat/completions", json=BODY)
        sim.faults.add("drop_stream")
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(sim.base_url + "/chat/completions", json=BODY)
        assert (await http.post(sim.base_url + "/chat/completions", json=BODY)).status_code == 200


async def test_a_cancelled_request_does_not_pool_its_connection(http: httpx.AsyncClient) -> None:
    async with SimulatedProvider("openai", SimConfig(ttft_ms=2_000)) as sim:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.post(sim.base_url + "/chat/completions", json=BODY)
        transport = http._transport
        assert isinstance(transport, LeanTransport)
        assert sum(len(idle) for idle in transport._idle.values()) == 0


async def test_the_ttl_cache_loads_once_for_many_waiters() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(1.0, clock=lambda: now[0])
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return loads

    assert await asyncio.gather(*(cache.get("k", load) for _ in range(50))) == [1] * 50
    now[0] = 0.5
    assert await cache.get("k", load) == 1
    now[0] = 1.5
    assert await cache.get("k", load) == 2

    async def fail() -> int:
        raise ValueError("nope")

    now[0] = 3.0
    with pytest.raises(ValueError, match="nope"):
        await cache.get("k", fail)
    assert await cache.get("k", load) == 3  # failures are not kept
