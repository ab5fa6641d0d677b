"""The clients' HTTP API: chat completions, quotes, clearing records, models and the account."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from auction import views
from auction.broker import Broker
from auction.forward import Forwarder

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class RelayResponse(StreamingResponse):
    """A stream that always closes its events, so a client that left is settled promptly."""

    def __init__(
        self, events: AsyncIterator[bytes], headers: dict[str, str], forwarder: Forwarder
    ) -> None:
        super().__init__(events, headers={**SSE_HEADERS, **headers}, media_type="text/event-stream")
        self._forwarder = forwarder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await self._forwarder.finish(aclose())


def _json(data: object) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), media_type=JSON)


def client_router(broker: Broker) -> APIRouter:
    """The client routes, all authenticated by API key."""
    router = APIRouter()

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        order = await broker.prepare(key, await request.body())
        if order.chat.wants_stream:
            stream = await broker.stream(order)
            return RelayResponse(stream.events, stream.headers, broker.parts.forwarder)
        answer = await broker.complete(order)
        return Response(answer.body, media_type=JSON, headers=answer.headers)

    @router.post("/v1/quote")
    async def quote(request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        return _json(await views.quote(broker, key, await request.body()))

    @router.get("/v1/clearings/{clearing_id}")
    async def clearing(clearing_id: str, request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        return _json(await broker.parts.records.get(clearing_id, key.key_id))

    @router.get("/v1/models")
    async def models(request: Request) -> Response:
        await broker.authenticate(request.headers.get("authorization"))
        return _json(views.models(broker.parts.replica.index, broker.parts.catalogue))

    @router.get("/v1/account")
    async def account(request: Request) -> Response:
        key = await broker.authenticate(request.headers.get("authorization"))
        return _json(views.account(await broker.parts.accounts.account(key.key_id)))

    return router
