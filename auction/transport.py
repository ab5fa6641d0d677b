"""A lean HTTP/1.1 keep-alive transport for the one httpx client that calls providers.

Why: httpx's default transport (httpcore on anyio, h11 parsing) costs about 0.8 ms of CPU per
request on this project's machines, more than everything else a chat request does together.
This transport keeps httpx's client API (requests, responses, streaming, decoding) and replaces
only the wire: asyncio protocols, httptools parsing (as uvicorn does), a LIFO pool of idle
connections per origin. Timeouts are the caller's (the forwarder bounds each attempt with
`asyncio.timeout`); a request cancelled midway closes its connection instead of pooling it.
Errors are httpx's own types, so callers cannot tell the difference.

The forwarder skips even httpx's client (request and response models, cookies, hooks: about as
much CPU again as the wire) with `LeanTransport.exchange`, which sends bytes and gives back the
status, the headers as text and the body; `handle_async_request` is the same under httpx's API.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast

import httptools
import httpx

HIGH_WATER = 1 << 20  # buffered body bytes before reading from the socket pauses
Origin = tuple[str, str, int]
USER_AGENT = b"python-httpx/" + httpx.__version__.encode()


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._wake: asyncio.Future[None] | None = None
        self._error: httpx.TransportError | None = None
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.head_done = False
        self.complete = False
        self.body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self.got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()
            return
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            if not self.got_bytes:
                message = "Server disconnected without sending a response."
            else:
                message = "Server disconnected before the response ended."
            self._fail(httpx.RemoteProtocolError(message))
        self._notify()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if not self._parser.should_keep_alive():
            self.closed = True  # reused by no one; closed when released

    # used by the transport
    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error

    def _notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def wait(self) -> None:
        """Until more of the response arrives; raises the connection's error, if any."""
        if self._error is not None:
            raise self._error
        self._wake = asyncio.get_running_loop().create_future()
        await self._wake
        if self._error is not None and not (self.body or self.complete):
            raise self._error

    def take(self) -> bytes:
        data = b"".join(self.body)
        self.body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection; the connection goes back when it is done."""

    def __init__(self, conn: _Connection, pool: LeanTransport, origin: Origin) -> None:
        self._conn, self._pool, self._origin = conn, pool, origin
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while True:
                if conn.body:
                    yield conn.take()
                    continue
                if conn.complete:
                    break
                await conn.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back (pooled if its exchange ended cleanly); at once, no I/O."""
        if not self._released:
            self._released = True
            self._pool.release(self._origin, self._conn)


class Exchange:
    """A response whose head has arrived: its status, headers (as text) and body."""

    def __init__(self, conn: _Connection, pool: LeanTransport, origin: Origin) -> None:
        self.status = conn.status
        self.raw_headers = conn.headers
        self.body = _Body(conn, pool, origin)
        self._conn = conn

    def ready(self) -> bool:
        """Whether reading the body on would not wait (data buffered, or the body is over)."""
        conn = self._conn
        return bool(conn.body) or conn.complete or conn.closed

    @property
    def headers(self) -> dict[str, str]:
        """The headers, names lower-cased (a repeated one: its last value)."""
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw_headers}

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        return b"".join([piece async for piece in self.body])

    def close(self) -> None:
        """Give the connection back (closed if the body was not read to its end); never waits,
        so nothing can interrupt it."""
        self.body.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over pooled keep-alive connections (see the module docstring)."""

    def __init__(self, *, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._tls: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = request.content if isinstance(request.stream, httpx.ByteStream) else None
        if body is None:
            body = await request.aread()
        head = _head(request.method, url.raw_path, request.headers.raw, len(body))
        exchange = await self._send(_origin(url), head + body)
        return httpx.Response(
            exchange.status,
            headers=exchange.raw_headers,
            stream=exchange.body,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def exchange(
        self, method: str, url: httpx.URL, headers: Mapping[str, str], body: bytes
    ) -> Exchange:
        """Send a request as it is (plus host, user-agent and, as nothing here decompresses,
        accept-encoding: identity) and wait for the response's head.

        Raises httpx.TransportError subclasses, as httpx would. Read or close the body.
        """
        raw = [(b"host", url.netloc), (b"user-agent", USER_AGENT)]
        raw.append((b"accept-encoding", b"identity"))
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        return await self._send(_origin(url), _head(method, url.raw_path, raw, len(body)) + body)

    async def _send(self, origin: Origin, data: bytes) -> Exchange:
        conn = self._checkout(origin) or await self._connect(origin)
        try:
            assert conn.transport is not None
            conn.transport.write(data)
            while not conn.head_done:
                await conn.wait()
        except BaseException:  # cancelled or failed: nothing else may read from it
            conn.close()
            raise
        return Exchange(conn, self, origin)

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reset()
                return conn
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            self._tls = self._tls or ssl.create_default_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, host, port, ssl=tls, server_hostname=host if tls else None
            )
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def release(self, origin: Origin, conn: _Connection) -> None:
        """Pool the connection if its exchange ended cleanly, else close it."""
        idle = self._idle.setdefault(origin, [])
        if conn.complete and not conn.closed and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _origin(url: httpx.URL) -> Origin:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


def _head(method: str, target: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    for name, value in headers:
        if name.lower() not in (b"content-length", b"transfer-encoding"):
            lines.append(name + b": " + value)
    lines.append(b"content-length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"
