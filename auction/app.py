"""The marketplace's ASGI application, built from an explicit Settings object."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auction.errors import InvalidRequest, MarketError, RequestTooLarge, ServiceUnavailable
from auction.market import Market
from auction.resp import RespError
from auction.routes import health
from auction.settings import Settings
from clearing.catalogue import Catalogue

log = logging.getLogger("auction.app")


def create_app(settings: Settings, *, catalogue: Catalogue | None = None) -> FastAPI:
    """Build the app; Redis is connected and background tasks started in its lifespan."""
    market = Market(settings, catalogue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await market.start()
        try:
            yield
        finally:
            await market.stop()

    app = FastAPI(title="LLM inference auction", version="1.0", lifespan=lifespan)
    app.state.market = market
    _install_error_handlers(app)
    app.include_router(health.router)
    for router in market.routers():
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MarketError)
    async def market_error(request: Request, exc: MarketError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_to_market_error(exc))

    async def redis_away(request: Request, exc: Exception) -> JSONResponse:
        # Redis is away or refusing writes: the client may retry, so 503, never a 500.
        log.warning("Redis unavailable: %s", type(exc).__name__)
        return error_response(ServiceUnavailable("the market's store is unavailable; retry"))

    # Connection-level failures of redis-py and of the request path's RESP client (builtin
    # ConnectionError); error replies that mean "not now" (OOM, READONLY, LOADING, MISCONF).
    for kind in (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.BusyLoadingError,
        redis_errors.ReadOnlyError,
        redis_errors.OutOfMemoryError,
        ConnectionError,
    ):
        app.add_exception_handler(kind, redis_away)

    @app.exception_handler(redis_errors.ResponseError)
    @app.exception_handler(RespError)
    async def redis_reply_error(request: Request, exc: Exception) -> JSONResponse:
        if str(exc).startswith(_REFUSALS):
            return await redis_away(request, exc)
        raise exc

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {
            "error": {
                "message": str(exc.detail),
                "type": "invalid_request_error",
                "code": "not_found" if exc.status_code == 404 else "invalid_request",
                "param": None,
            }
        }
        return JSONResponse(body, status_code=exc.status_code)


_REFUSALS = ("OOM", "READONLY", "LOADING", "MISCONF", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def error_response(exc: MarketError) -> JSONResponse:
    """The OpenAI-shaped error response for a MarketError."""
    return JSONResponse(exc.body(), status_code=exc.http_status, headers=exc.headers)


def validation_to_market_error(exc: RequestValidationError) -> InvalidRequest:
    """Turn FastAPI's 422 into our 400 invalid_request, naming the first bad field."""
    errors = exc.errors()
    if not errors:
        return InvalidRequest("invalid request body")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return InvalidRequest("the body is not valid JSON", param=None)
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return InvalidRequest(message, param=param)


class BodyLimit:
    """Refuse bodies over the limit with 413 before the route reads them (ASGI middleware)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_too_large(send, self.max_bytes)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await _send_too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _send_too_large(send: Send, limit: int) -> None:
    exc = RequestTooLarge(f"the request body is over the limit of {limit} bytes")
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
