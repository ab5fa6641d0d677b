"""`GET /v1/feed`: the clients' price feed WebSocket (authenticated before the upgrade).

A missing, unknown or revoked key is refused before the WebSocket is accepted, with HTTP 401 and
the OpenAI error body, through the ASGI "WebSocket Denial Response" extension (uvicorn and
Starlette's test client both offer it). A server without that extension cannot answer an upgrade
with a status of our choosing (a close before accept becomes a bare 403), so there the socket is
accepted and at once closed with code 4001 and reason "invalid_api_key". When Redis cannot
answer, the refusal is HTTP 503 (or close 1013, "try again later").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from auction.accounts import KeyRecord
from auction.errors import MarketError, ServiceUnavailable
from auction.feed import CLOSE_INVALID_KEY
from auction.feed_hub import FeedHub

Authenticate = Callable[[str | None], Awaitable[KeyRecord]]
"""Accounts.authenticate: the key record for a token, or InvalidApiKey (another MarketError)."""

CLOSE_TRY_LATER = 1013  # "try again later": the market could not check the key just now
DENIAL_EXTENSION = "websocket.http.response"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def feed_router(hub: FeedHub, authenticate: Authenticate) -> APIRouter:
    """The router serving `GET /v1/feed` through `hub`."""
    router = APIRouter()

    @router.websocket("/v1/feed")
    async def feed(websocket: WebSocket) -> None:
        try:
            key = await authenticate(bearer_token(websocket.headers.get("authorization")))
        except MarketError as exc:
            await _deny(websocket, exc)
            return
        except RedisError:
            await _deny(websocket, ServiceUnavailable("the market cannot check keys right now"))
            return
        await websocket.accept()
        await hub.serve(websocket, key.key_id)

    return router


async def _deny(websocket: WebSocket, exc: MarketError) -> None:
    if DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
        response = JSONResponse(exc.body(), status_code=exc.http_status, headers=exc.headers)
        await websocket.send_denial_response(response)
        return
    await websocket.accept()
    code = CLOSE_INVALID_KEY if exc.http_status == 401 else CLOSE_TRY_LATER
    await websocket.close(code, exc.code)
