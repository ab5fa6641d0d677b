"""The lean Redis pipeline and the command runner, against the real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from auction.commands import Runner, command, script
from auction.resp import RespClient, RespError, pack
from auction.scripts import source


def test_pack_is_resp() -> None:
    assert (
        pack([("SET", "k", "é", 7)])
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n$1\r\n7\r\n"
    )
    assert pack([("GET", b"\x00")]) == b"*2\r\n$3\r\nGET\r\n$1\r\n\x00\r\n"


async def test_a_batch_answers_in_order_with_errors_as_values(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    client = RespClient(redis_url)
    try:
        key = f"{key_prefix}:x"
        replies = await client.execute(
            [("SET", key, "1"), ("INCR", key), ("HGET", key, "f"), ("GET", key), ("PING",)]
        )
        assert replies[:2] == [b"OK", 2]
        assert isinstance(replies[2], RespError) and "WRONGTYPE" in str(replies[2])
        assert replies[3:] == [b"2", b"PONG"]
    finally:
        await client.aclose()


async def test_concurrent_batches_share_one_connection(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    client = RespClient(redis_url)
    key = f"{key_prefix}:n"
    try:
        results = await asyncio.gather(
            *(client.execute([("INCR", key), ("GET", key)]) for _ in range(200))
        )
    finally:
        await client.aclose()
    counts = sorted(int(r[0]) for r in results)  # type: ignore[call-overload]
    assert counts == list(range(1, 201))
    assert all(int(r[1]) >= int(r[0]) for r in results)  # type: ignore[call-overload]


async def test_a_lost_connection_fails_the_batch_and_the_next_reconnects(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    client = RespClient(redis_url)
    try:
        name = f"{key_prefix}-victim"
        await client.execute([("CLIENT", "SETNAME", name)])
        # A batch in flight when the connection dies (BLPOP waits; the request path never
        # blocks, this only holds the batch open for the test).
        waiting = asyncio.create_task(client.execute([("BLPOP", f"{key_prefix}:none", 5)]))
        await asyncio.sleep(0.05)
        listing = (await redis_client.execute_command("CLIENT", "LIST")).decode()  # type: ignore[no-untyped-call]
        [victim] = [line.split()[0].split("=")[1] for line in listing.splitlines() if name in line]
        await redis_client.execute_command("CLIENT", "KILL", "ID", victim)  # type: ignore[no-untyped-call]
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 2)
        assert await client.execute([("PING",)]) == [b"PONG"]  # reconnected
    finally:
        await client.aclose()


async def test_the_runner_reloads_a_script_redis_lost(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    runner = Runner(RespClient(redis_url), redis_client)
    try:
        await redis_client.script_flush()
        key = f"{key_prefix}:h"
        cmd = script("hold_release", [key, f"{key}:a", f"{key}:p"], ["some-hold"])
        replies = await runner.run(command("PING"), cmd)
        assert replies == [b"PONG", 0]
        assert (await redis_client.script_exists(cmd.args[1]))[0]  # type: ignore[arg-type]
        assert source("hold_release")
    finally:
        await runner.aclose()


async def test_a_redis_that_stops_answering_fails_the_batches_in_flight_then_recovers(
    redis_url: str,
) -> None:
    """A peer that accepts and reads but never answers (a stopped or partitioned Redis)."""
    silent: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            client.execute([("PING",)]), client.execute([("PING",)]), return_exceptions=True
        )
        elapsed = asyncio.get_running_loop().time() - started
        assert all(isinstance(r, ConnectionError) for r in results), results
        assert "did not answer within 0.2 s" in str(results[0])
        assert 0.15 < elapsed < 2.0
        # The connection was dropped, so a later batch starts on a fresh one.
        with pytest.raises(ConnectionError):
            await client.execute([("PING",)])
        assert len(silent) == 2
    finally:
        await client.aclose()
        server.close()
    healthy = RespClient(redis_url, timeout_s=0.2)
    try:
        assert await healthy.execute([("PING",)]) == [b"PONG"]
    finally:
        await healthy.aclose()
