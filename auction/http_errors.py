"""How exceptions on a request path become OpenAI-shaped HTTP errors (one mapping for all).

`MarketError`s render as themselves. Redis being away or refusing writes (redis-py's and the
lean RESP client's connection errors, and the error replies OOM, READONLY, LOADING, ...) is a
503 `unavailable` the client may retry, never a 500. Anything else is a bug: `client_error`
returns None and the caller renders a 500 `internal_error`.
"""

from __future__ import annotations

import json
import logging

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import exceptions as redis_errors
from starlette.types import Send

from auction.errors import InvalidRequest, MarketError, ServiceUnavailable
from auction.resp import RespError

log = logging.getLogger("auction.app")

REDIS_AWAY: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    ConnectionError,
)
REDIS_REPLY_ERRORS: tuple[type[Exception], ...] = (redis_errors.ResponseError, RespError)
REFUSALS = ("OOM", "READONLY", "LOADING", "MISCONF", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def client_error(exc: Exception) -> MarketError | None:
    """The error the client sees for `exc`, or None when it is a bug (a 500)."""
    if isinstance(exc, MarketError):
        return exc
    away = isinstance(exc, REDIS_AWAY)
    if away or (isinstance(exc, REDIS_REPLY_ERRORS) and str(exc).startswith(REFUSALS)):
        log.warning("Redis unavailable: %s", type(exc).__name__)
        return ServiceUnavailable("the market's store is unavailable; retry")
    return None


def error_response(exc: MarketError) -> JSONResponse:
    """The OpenAI-shaped error response for a MarketError."""
    return JSONResponse(exc.body(), status_code=exc.http_status, headers=exc.headers)


class InternalError(MarketError):
    """A bug: shown as 500 `internal_error` without details (they go to the log)."""


async def send_error(send: Send, exc: MarketError) -> None:
    """Send `exc` as a whole response on a raw ASGI `send`."""
    body = json.dumps(exc.body(), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
