"""The marketplace's ASGI application, built from an explicit Settings object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auction.errors import MarketError, RequestTooLarge
from auction.http_errors import (
    REDIS_AWAY,
    REDIS_REPLY_ERRORS,
    client_error,
    error_response,
    send_error,
    validation_to_market_error,
)
from auction.market import Market
from auction.routes import health
from auction.settings import Settings
from clearing.catalogue import Catalogue

log = logging.getLogger("auction.app")


class MarketApp(FastAPI):
    """FastAPI, plus raw ASGI endpoints for the hottest paths.

    A request whose method and exact path are in `fast_routes` goes straight to its endpoint,
    past the middleware stack and routing (tens of microseconds per request); the endpoint
    does its own body limit and error rendering (`auction.http_errors`). Everything else,
    including lifespan, is FastAPI's.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.fast_routes.get((scope["method"], scope["path"]))
            if endpoint is not None and not scope.get("root_path"):
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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

    app = MarketApp(title="LLM inference auction", version="1.0", lifespan=lifespan)
    app.state.market = market
    limit = settings.max_body_bytes
    app.fast_routes.update(
        {route: BodyLimit(endpoint, limit) for route, endpoint in market.fast_routes().items()}
    )
    _install_error_handlers(app)
    app.include_router(health.router)
    for router in market.routers():
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def render(request: Request, exc: Exception) -> JSONResponse:
        error = client_error(exc)
        if error is None:
            raise exc
        return error_response(error)

    kinds: tuple[type[Exception], ...] = (MarketError, *REDIS_AWAY, *REDIS_REPLY_ERRORS)
    for kind in kinds:
        app.add_exception_handler(kind, render)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_to_market_error(exc))

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


class BodyLimit:
    """Refuse bodies over the limit with 413 (ASGI middleware).

    A Content-Length over the limit is refused before the app runs; a body that grows past it
    makes the app's `receive` raise RequestTooLarge, which the app may render itself (FastAPI's
    handlers and the raw endpoints do) or leave to this middleware.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = RequestTooLarge(f"the request body is over the limit of {self.max_bytes} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, too_large)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        try:
            await self.app(scope, limited_receive, send)
        except RequestTooLarge as exc:
            await send_error(send, exc)
