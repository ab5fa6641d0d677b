"""Provider failures, typed by whose fault they are; failover is decided by type.

ProviderError                 the provider did not give a usable answer
├── UpstreamTimeout           no (complete) answer in the time left: retry elsewhere
├── UpstreamUnavailable       connection refused/reset, HTTP 5xx: retry elsewhere
├── UpstreamRateLimited       HTTP 429 (retry_after_ms when the provider said): elsewhere
├── UpstreamBadResponse       malformed JSON, empty content, a stream cut short: elsewhere
└── UpstreamRejected          HTTP 4xx other than 429: the request's own fault, not retried
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call that failed; `retryable` says whether another offer may succeed."""

    retryable: bool = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class UpstreamTimeout(ProviderError):
    pass


class UpstreamUnavailable(ProviderError):
    pass


class UpstreamRateLimited(ProviderError):
    def __init__(
        self, message: str, *, status: int | None = 429, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_ms = retry_after_ms


class UpstreamBadResponse(ProviderError):
    pass


class UpstreamRejected(ProviderError):
    retryable = False
