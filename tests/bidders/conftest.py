"""Shared fixtures for the bidder tests: a test marketplace and an HTTP client for simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.bidders.runtime_kit import Market, start


@pytest.fixture
async def market() -> AsyncIterator[tuple[Market, str]]:
    m = Market()
    server = await start(m)
    port = server.sockets[0].getsockname()[1]
    try:
        yield m, f"ws://127.0.0.1:{port}/v1/bidders/ws"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def sim_client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the simulated providers' tests (test_simulated_*)."""
    # Plain HTTP on 127.0.0.1: no TLS, so skip loading a CA bundle for every test.
    async with httpx.AsyncClient(timeout=10, verify=False) as http:
        yield http
