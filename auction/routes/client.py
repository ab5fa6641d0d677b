"""The clients' HTTP API: chat completions, quotes, clearing records, models and the account."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from auction import views
from auction.broker import Broker
from auction.errors import InvalidRequest
from auction.http_errors import InternalError, client_error, send_error
from auction.relay import DONE

log = logging.getLogger(__name__)
JSON = "application/json"
CHAT_PATH = "/v1/chat/completions"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_JSON_HEADER = (b"content-type", b"application/json")


class RelayResponse(StreamingResponse):
    """A stream that always closes its events, so a client that left is settled promptly.

    Closing the relay's events never waits (`auction.relay.Relay` settles without an await),
    so it needs no shielded task to finish under a client's cancellation.
    """

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__(events, headers={**SSE_HEADERS, **headers}, media_type="text/event-stream")

    async def stream_response(self, send: Send) -> None:
        """As Starlette's, but the piece that ends in DONE (the last) also ends the body, in
        one write instead of two."""
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        ended = False
        async for piece in self.body_iterator:
            assert isinstance(piece, bytes) and not ended
            ended = piece.endswith(DONE)
            await send({"type": "http.response.body", "body": piece, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await _unless_client_leaves(self.stream_response(send), receive)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:  # at once if they ran to their end
                await aclose()


async def _unless_client_leaves(work: Awaitable[None], receive: Receive) -> None:
    """Run `work`, stopped (cancelled) if the client disconnects first.

    Starlette does the same for a stream with an anyio task group; one plain watcher task costs
    a fraction of that. The watcher can only cancel while `work` is suspended inside it, and it
    is cancelled itself, with no await in between, as soon as `work` ends.
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not left or task.uncancel() > 0:  # cancelled by someone else too
            raise
    finally:
        watcher.cancel()


class ChatEndpoint:
    """`POST /v1/chat/completions` as a raw ASGI app: the path every chat request takes.

    It reads the body, authenticates, clears, forwards and answers, rendering every error in
    the OpenAI shape itself (`auction.http_errors`), without Starlette's request, routing and
    middleware objects. The body limit is `auction.app.BodyLimit`'s, around it.
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(scope, receive, send)
        except Exception as exc:
            error = client_error(exc)
            if error is None:
                log.exception("chat completion failed")
                error = InternalError("internal error; the request was not charged")
            await send_error(send, error)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        broker = self._broker
        key = await broker.authenticate(authorization)
        order = await broker.prepare(key, await _body(receive))
        if order.chat.wants_stream:
            stream = await broker.stream(order)
            relay = RelayResponse(stream.events, stream.headers)
            await relay(scope, receive, send)
            return
        answer = await broker.complete(order)
        headers = [_JSON_HEADER, (b"content-length", b"%d" % len(answer.body))]
        headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


async def _body(receive: Receive) -> bytes:
    """The whole request body (one piece without copying, as it mostly comes)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("the client closed the connection before the body ended")
        part: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return b"".join([*parts, part]) if parts else part
        parts.append(part)


def _json(data: object) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), media_type=JSON)


def client_router(broker: Broker) -> APIRouter:
    """The client routes, all authenticated by API key."""
    router = APIRouter()

    # The same endpoint as the app's fast path (`auction.app.MarketApp`), for a mounted app.
    router.routes.append(Route(CHAT_PATH, ChatEndpoint(broker), methods=["POST"]))

    @router.post("/v1/quote")
    async def quote(request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        return _json(await views.quote(broker, key, await request.body()))

    @router.get("/v1/clearings/{clearing_id}")
    async def clearing(clearing_id: str, request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        await broker.settled(key.key_id)
        return _json(await broker.parts.records.get(clearing_id, key.key_id))

    @router.get("/v1/models")
    async def models(request: Request) -> Response:
        await broker.authenticate(request.headers.get("authorization"))
        return _json(views.models(broker.parts.replica.index, broker.parts.catalogue))

    @router.get("/v1/account")
    async def account(request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        await broker.settled(key.key_id)
        return _json(views.account(await broker.parts.accounts.account(key.key_id)))

    return router
