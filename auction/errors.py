"""The marketplace's one error tree, and how each error renders in the OpenAI error shape.

    MarketError                      any failure a client or operator sees (http_status, code)
    ├── InvalidRequest        400    invalid_request: malformed JSON, wrong types, unknown model
    ├── InvalidApiKey         401    invalid_api_key: missing, unknown or revoked key or token
    ├── BudgetExceeded        402    budget_exceeded: worst case over the budget or max_cost_usd
    ├── NotFound              404    not_found: no such clearing (or not the key's own)
    ├── RequestTooLarge       413    request_too_large: body over the server's limit
    ├── RateLimited           429    rate_limited: the key's request rate is over its limit
    ├── UpstreamFailed        502    upstream_failed: every qualifying offer was tried and failed
    ├── NoQualifyingOffer     503    no_qualifying_offer: details count offers per pass-over reason
    └── ServiceUnavailable    503    unavailable: Redis is away or refusing writes

Provider failures are typed by whose fault they are in `bidders.errors` (ProviderError and its
subclasses); the forwarder decides failover by their type and turns the last of them into
UpstreamFailed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
}


class MarketError(Exception):
    """Root of the tree: an error with an HTTP status and an interface code."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        details: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers) if headers else {}

    def body(self) -> dict[str, object]:
        """The OpenAI error body: {"error": {"message", "type", "code", "param"}}."""
        error: dict[str, object] = {
            "message": self.message,
            "type": _TYPES.get(self.http_status, "api_error"),
            "code": self.code,
            "param": self.param,
        }
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(MarketError):
    http_status = 400
    code = "invalid_request"


class InvalidApiKey(MarketError):
    http_status = 401
    code = "invalid_api_key"


class BudgetExceeded(MarketError):
    http_status = 402
    code = "budget_exceeded"


class NotFound(MarketError):
    http_status = 404
    code = "not_found"


class RequestTooLarge(MarketError):
    http_status = 413
    code = "request_too_large"


class RateLimited(MarketError):
    http_status = 429
    code = "rate_limited"


class UpstreamFailed(MarketError):
    http_status = 502
    code = "upstream_failed"


class NoQualifyingOffer(MarketError):
    http_status = 503
    code = "no_qualifying_offer"


class ServiceUnavailable(MarketError):
    http_status = 503
    code = "unavailable"
