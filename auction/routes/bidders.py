"""GET /v1/bidders/ws: the bidder WebSocket; a thin shell around the sans-I/O BidderSession."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from auction.errors import InvalidApiKey
from bidders.messages import error_message
from bidders.session import Action, BidderSession, Close, Refresh, Send, SessionLimits, Upsert
from bidders.session import Withdraw as WithdrawAction

if TYPE_CHECKING:
    from auction.market import Market

log = logging.getLogger("auction.bidders")
CLOSE_BOOK_LOST = 1012  # "service restart": the bidder reconnects and quotes its whole state
router = APIRouter()


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def limits_of(market: Market) -> SessionLimits:
    s = market.settings
    return SessionLimits(
        max_message_bytes=s.max_message_bytes,
        max_offers_per_provider=s.max_offers_per_provider,
        max_messages_per_second=s.max_messages_per_second,
        default_ttl_ms=s.default_ttl_ms,
        max_ttl_ms=s.max_ttl_ms,
        heartbeat_ms=s.heartbeat_ms,
    )


@router.websocket("/v1/bidders/ws")
async def bidder_socket(websocket: WebSocket) -> None:
    """Authenticate before the upgrade (HTTP 401), then run the session until it closes."""
    market: Market = websocket.app.state.market
    try:
        provider = await market.providers.authenticate(
            bearer(websocket.headers.get("authorization"))
        )
    except InvalidApiKey as exc:
        await websocket.send_denial_response(JSONResponse(exc.body(), status_code=401))
        return
    await websocket.accept()
    session = BidderSession(
        provider.name, market.catalogue, limits_of(market), uuid.uuid4().hex, _now_ms()
    )
    await market.bidder_hub.register(
        provider.name, session.session_id, websocket.send_text, websocket.close
    )
    log.info("bidder session %s for %s opened", session.session_id[:8], provider.name)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text") or message.get("bytes") or b""
            for action in session.receive(data, _now_ms()):
                if not await _perform(market, session, websocket, action):
                    return
    except WebSocketDisconnect:
        pass
    finally:
        market.bidder_hub.unregister(provider.name, session.session_id)
        session.connection_lost()
        await _cancel(market, session)


async def _perform(
    market: Market, session: BidderSession, websocket: WebSocket, action: Action
) -> bool:
    """Carry out one action; False when the session is over."""
    try:
        if isinstance(action, Send):
            await websocket.send_text(action.text)
        elif isinstance(action, Upsert):
            await market.book.upsert(session.session_id, action.offers)
        elif isinstance(action, WithdrawAction):
            await market.book.withdraw(session.provider, action.offer_ids)
        elif isinstance(action, Refresh):
            refreshed = await market.book.refresh(session.session_id, action.models)
            if refreshed == 0 and session.owned_in(action.models) > 0:
                # The book lost every offer this session keeps alive (Redis restarted without
                # its data, or the heartbeats came too late): ask the bidder to reconnect, which
                # makes it quote its whole state again.
                log.warning("bidder %s: its offers are gone from the book", session.provider)
                await websocket.close(CLOSE_BOOK_LOST, "offers lost from the book; reconnect")
                return False
        elif isinstance(action, Close):
            await websocket.close(action.code, action.reason)
            return False
    except RedisError as exc:
        log.warning("bidder %s: book unavailable (%s)", session.provider, type(exc).__name__)
        await websocket.send_json(
            error_message("unavailable", "the book is unavailable; nothing was changed")
        )
    return True


async def _cancel(market: Market, session: BidderSession) -> None:
    try:
        cancelled = await market.book.cancel_session(session.session_id, session.models)
    except RedisError as exc:
        log.warning("cancel on disconnect for %s failed: %s", session.provider, exc)
        return
    log.info(
        "bidder session %s for %s closed; %d offers cancelled",
        session.session_id[:8],
        session.provider,
        len(cancelled),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
