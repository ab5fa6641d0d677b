"""The feed benchmark's child processes: the served feed, and the lean WebSocket subscribers.

The server (replica, hub and the real `/v1/feed` route under uvicorn) runs in a spawned child, as
in production. The subscribers run in another (uvloop) as raw-socket WebSocket clients, so that
the figures measure the server rather than a client library: each one only splits frames and
notes the change number out of the update's `upstream_model` ("bench-<k>") and when it arrived.
The driver in `auction.feed_bench` sends the changes and computes the delays.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import socket
import time
from array import array
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from typing import Protocol, cast

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from auction.accounts import Accounts
from auction.feed_hub import FeedHub
from auction.keys import Keys
from auction.replica import BookReplica
from auction.routes.feed import feed_router
from auction.serve import settle_heap

MODEL = "gpt-4o"  # the one model the bench quotes, serves and subscribes to
# What precedes the change number in an offer (string values are escaped, so this only matches
# the field). Every bench update carries its offer (a re-quote is a `changed` update); a
# snapshot's offers carry numbers too, so stretches with a snapshot are read message by message.
_MARK = b'"upstream_model":"bench-'
_UPDATE = b'{"type":"update"'
_SNAPSHOT = b'{"type":"snapshot"'


def subscribe_frame(batch_ms: int | None) -> bytes:
    """The masked frame a subscriber sends once upgraded; `batch_ms` asks for batched frames."""
    message: dict[str, object] = {"type": "subscribe", "channels": ["book"], "models": ["*"]}
    if batch_ms is not None:
        message["batch_ms"] = batch_ms
    return _masked(json.dumps(message, separators=(",", ":")).encode())


# -- the child processes ---------------------------------------------------------------------------
_SPAWN = multiprocessing.get_context("spawn")


class _Child:
    """A spawned child that reports once on its pipe when it is ready; stopped on exit.

    `target` gets `args`, then its end of the pipe.
    """

    def __init__(self, target: Callable[..., None], *args: object) -> None:
        self._parent, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(target=target, args=(*args, child), daemon=True)

    def _start(self, timeout_s: float, what: str) -> object:
        """Start the child; its first report (raises if none comes within `timeout_s`)."""
        self._process.start()
        if not self._parent.poll(timeout_s):
            raise RuntimeError(f"the feed bench {what}")
        return self._parent.recv()

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def cpu_s(self) -> float:
        return _cpu_s(self._process.pid)


class ServerProcess(_Child):
    """A child process serving the feed on 127.0.0.1."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        super().__init__(_serve, redis_url, prefix)
        self.port = 0

    def __enter__(self) -> ServerProcess:
        self.port = cast(int, self._start(30, "server did not start"))
        return self


def _cpu_s(pid: int | None) -> float:
    """User plus system CPU seconds a process has used (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(redis_url: str, prefix: str, report: Connection) -> None:
    # uvicorn's own loop choice (uvloop when installed), as `auction serve` runs it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)  # connections wait in the backlog until the app has started
    report.send(listener.getsockname()[1])
    app = _app(redis_url, prefix)
    settle_heap()  # as a served process does
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run([listener])


def _app(redis_url: str, prefix: str) -> FastAPI:
    redis = aioredis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    replica = BookReplica(redis, keys, [MODEL])
    hub = FeedHub(redis, keys, replica, [MODEL])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await replica.start()
        await hub.start()
        yield
        await hub.stop()
        await replica.stop()

    app = FastAPI(lifespan=lifespan)
    app.include_router(feed_router(hub, Accounts(redis, keys).authenticate))
    return app


# -- lean subscribers -----------------------------------------------------------------------------
class _Subscriber(asyncio.Protocol):
    """A minimal WebSocket client: upgrade, subscribe, then time each update frame."""

    def __init__(
        self,
        port: int,
        token: str,
        subscribe: bytes,
        record: _Record,
    ) -> None:
        self._request = (
            f"GET /v1/feed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        self._subscribe = subscribe
        self._record = record
        self._buffer = bytearray()
        self._upgraded = False
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(self._buffer[:200]).decode()))
                return
            del self._buffer[: end + 4]
            self._upgraded = True
            assert self.transport is not None
            self.transport.write(self._subscribe)
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf, end, pos, frames = self._buffer, len(self._buffer), 0, 0
        while end - pos >= 2:  # whole frames only; a frame is one message or (batched) an array
            size, head = buf[pos + 1] & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(buf[pos + 2 : pos + 4]), 4
            elif size == 127:
                size, head = int.from_bytes(buf[pos + 2 : pos + 10]), 10
            if end - pos < head + size:
                break
            pos += head + size
            frames += 1
        if not frames:
            return
        record = self._record
        record.frames += frames
        numbers, count = record.numbers, len(record.numbers)
        start, snapshot = 0, buf.find(_SNAPSHOT, 0, pos) >= 0
        while (start := buf.find(_UPDATE if snapshot else _MARK, start, pos)) >= 0:
            if snapshot:  # the next number after an update's start is its own
                start = buf.find(_MARK, start, pos)
            start += len(_MARK)
            stop = buf.find(b'"', start)
            numbers.append(int(buf[start:stop]))
        record.arrivals.extend([now] * (len(numbers) - count))
        record.arrived.value += len(numbers) - count
        if snapshot and not self.ready.done():
            self.ready.set_result(None)
        del buf[:pos]


def _masked(payload: bytes) -> bytes:
    # A client frame must be masked; an all-zero mask key leaves the payload as it is.
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class _Counter(Protocol):
    value: int


class _Record:
    """What the subscribers saw: each update's change number and arrival time, and the frames."""

    def __init__(self, arrived: _Counter) -> None:
        self.numbers = array("q")
        self.arrivals = array("d")
        self.frames = 0
        self.arrived = arrived  # deliveries so far, shared with the driving process

    def clear(self) -> None:
        self.numbers, self.arrivals, self.frames = array("q"), array("d"), 0
        self.arrived.value = 0


class SubscriberProcess(_Child):
    """The lean subscribers in a child process of their own (uvloop, as a real client would use),
    so that reading a thousand sockets neither waits for nor slows down the driving loop.

    Arrival times are `time.perf_counter()` readings, which Linux takes from the same clock in
    every process, so the driver subtracts its own send times from them.
    """

    def __init__(self, port: int, token: str, count: int, subscribe: bytes) -> None:
        self._arrived = _SPAWN.RawValue("q", 0)
        super().__init__(_subscribe_in_child, port, token, count, subscribe, self._arrived)

    def __enter__(self) -> SubscriberProcess:
        ready = self._start(150, "subscribers did not connect")
        if ready != "ready":
            raise RuntimeError(f"the feed bench subscribers failed: {ready}")
        return self

    @property
    def arrived(self) -> int:
        return int(self._arrived.value)

    def reset(self) -> None:
        """Forget what arrived so far (the snapshots and heartbeats before the measurement)."""
        self._parent.send("reset")
        self._parent.recv()

    def results(self) -> tuple[array[int], array[float], int]:
        """The change numbers, their arrival times and the frames since `reset`."""
        self._parent.send("results")
        numbers, arrivals, frames = self._parent.recv()
        return numbers, arrivals, frames


def _subscribe_in_child(
    port: int, token: str, count: int, subscribe: bytes, arrived: _Counter, conn: Connection
) -> None:
    import uvloop

    try:
        uvloop.run(_subscribe_and_serve(port, token, count, subscribe, conn, arrived))
    except Exception as exc:  # tell the driver instead of leaving it waiting
        conn.send(repr(exc))


async def _subscribe_and_serve(
    port: int, token: str, count: int, subscribe: bytes, conn: Connection, arrived: _Counter
) -> None:
    loop = asyncio.get_running_loop()
    record = _Record(arrived)
    clients: list[_Subscriber] = []
    async with asyncio.timeout(120):
        for start in range(0, count, 50):  # in batches: each upgrade checks the key in Redis
            batch = []
            for _ in range(start, min(count, start + 50)):
                _, client = await loop.create_connection(
                    lambda: _Subscriber(port, token, subscribe, record), "127.0.0.1", port
                )
                batch.append(client)
            clients += batch
            await asyncio.gather(*(c.ready for c in batch))
    conn.send("ready")
    while True:  # the pipe stays blocking (a reader on the loop would make it non-blocking)
        if not conn.poll():
            await asyncio.sleep(0.02)
            continue
        command = conn.recv()
        if command == "reset":
            record.clear()
            conn.send("ok")
        elif command == "results":
            conn.send((record.numbers, record.arrivals, record.frames))
