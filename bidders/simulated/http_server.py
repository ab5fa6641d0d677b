"""A small HTTP/1.1 server on httptools: keep-alive, chunked streams, abrupt endings for faults.

Why not Starlette on uvicorn: with wrk against one core, a minimal JSON endpoint served about
11k req/s on Starlette, 23k as a bare ASGI app on uvicorn, and 55k on raw httptools like this.
A fault simulator also needs what ASGI hides: cutting a connection mid-body without a logged
traceback, and holding back the status line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger(__name__)
MAX_PIPELINED = 16  # requests queued on one connection before we stop reading from it
REASONS = {529: "Site Overloaded"}
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


Handler = Callable[[HttpRequest, "Responder"], Awaitable[None]]


class Responder:
    """Writes one response: whole (`send`), or `start` then `write`s then `end`; or `abort`."""

    def __init__(self, conn: _Connection, keep_alive: bool) -> None:
        self._conn = conn
        self.keep_alive = keep_alive
        self.started = False
        self.finished = False
        self._chunked = False

    def start(
        self, status: int, headers: list[tuple[str, str]], *, length: int | None = None
    ) -> None:
        """Send the status line and headers; without `length` the body is chunked."""
        self._conn.write(self._head(status, headers, length))

    def _head(self, status: int, headers: list[tuple[str, str]], length: int | None) -> bytes:
        assert not self.started, "response already started"
        self.started, self._chunked = True, length is None
        reason = REASONS.get(status) or HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
        lines.append(
            "transfer-encoding: chunked" if length is None else f"content-length: {length}"
        )
        lines.append("connection: keep-alive" if self.keep_alive else "connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self._conn.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await self._conn.drain()

    def end(self) -> None:
        if self._chunked:
            self._conn.write(b"0\r\n\r\n")
        self.finished = True

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._conn.write(self._head(status, headers, len(body)) + body)
        self.finished = True

    def abort(self) -> None:
        """Drop the connection at once (RST): the client sees a broken or missing response."""
        self.finished = True
        self.keep_alive = False
        self._conn.abort()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[tuple[HttpRequest, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self.closed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._reject(400, b"bad request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        self._server.connections.discard(self)
        if self._task is not None:
            self._task.cancel()  # nobody will read the answer: stop working on it
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= self._server.max_body_bytes:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._size > self._server.max_body_bytes:
            self._reject(413, b"request body too large")
            return
        url = httptools.parse_url(self._url)
        request = HttpRequest(
            method=self._parser.get_method().decode("latin-1"),
            path=(url.path or b"/").decode("latin-1"),
            query=(url.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
        )
        self._pending.append((request, self._parser.should_keep_alive()))
        if len(self._pending) >= MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve())

    # the rest
    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def shutdown(self) -> asyncio.Task[None] | None:
        """Close an idle connection; abort a busy one and cancel its handler (returned)."""
        task = self._task
        if task is None:
            self.close()  # a clean FIN: pooled clients see it and will not reuse the socket
        else:
            task.cancel()
            self.abort()
        return task

    def _reject(self, status: int, message: bytes) -> None:
        self._pending.clear()
        Responder(self, keep_alive=False).send(status, [("content-type", "text/plain")], message)
        self.close()

    async def _serve(self) -> None:
        while self._pending and not self.closed:
            request, keep_alive = self._pending.popleft()
            if self._transport is not None and len(self._pending) < MAX_PIPELINED:
                self._transport.resume_reading()
            responder = Responder(self, keep_alive)
            try:
                await self._server.handler(request, responder)
            except Exception:
                log.exception("simulated provider failed on %s %s", request.method, request.path)
                if not responder.started:
                    responder.send(500, [("content-type", "text/plain")], b"internal error")
            if not responder.finished:
                responder.abort()  # a half-written answer cannot be finished now
            if not responder.keep_alive:
                self.close()
                break
        self._task = None


class HttpServer:
    """Serves `handler` on a host and port until `close()`."""

    def __init__(self, handler: Handler, *, max_body_bytes: int = 32 * 1024 * 1024) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful when `port` is 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection; requests in progress are cancelled."""
        if self._server is None:
            return
        self._server.close()
        connections = list(self.connections)
        tasks = [t for t in (c.shutdown() for c in connections) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        # Return only once the sockets are really shut, so a caller's next connect is refused.
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=CLOSE_TIMEOUT_S)
        await self._server.wait_closed()
        self._server = None
