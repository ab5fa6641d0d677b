"""Feed frames written below the ASGI layer: one transport write per connection per flush.

Sending a message through ASGI costs a task switch, Starlette, the server's WebSocket library and
a `send` system call, ten times the feed's own work. Under uvicorn the feed writes the frames
itself instead: a server frame is unmasked (FIN + text opcode, the length, the payload), and the
fan-out only marks connections with output as dirty. At each flush the writer drains every dirty
connection's session and hands all its frames to the socket in ONE `transport.write`, so the
system calls scale with flushes, not messages; flushes come further apart the longer they take
(see `FrameWriter`). Each message is still a frame of its own (or, with
`batch_ms`, each batch), and only whole frames are written, so the server library's own pings
and close frame never land inside one. Frames go uncompressed, which is valid whether or not
permessage-deflate was negotiated (RSV1 = 0 marks an uncompressed message).

A client that reads slower than the market moves: its socket fills, then the transport's own
buffer. The writer drains a session only while that buffer holds less than `buffer_limit`
bytes; meanwhile the messages wait in the session's outbox, where book updates are conflated
and too many trades end the session with 4008. Such a connection is looked at again every
`recheck_s`.

Where no transport can be found (another ASGI server, a test client) the hub sends through ASGI
as before; `find_transport` decides.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Collection
from typing import Protocol, cast

from starlette.websockets import WebSocket

from auction.feed import Close, FeedSession

__all__ = ["FeedConnection", "FrameWriter", "Transport", "find_transport", "frame_header"]

_TEXT = 0x81  # FIN and opcode 1 (text); server frames carry no mask
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
_UVICORN_WS = "uvicorn.protocols.websockets."
_TRANSPORT_METHODS = ("write", "is_closing", "get_write_buffer_size")


def frame_header(size: int) -> bytes:
    """The header of an unmasked text frame (FIN set) whose payload is `size` bytes."""
    if size < 126:
        return bytes((_TEXT, size))
    if size < 65_536:
        return _HEAD16.pack(_TEXT, 126, size)
    return _HEAD64.pack(_TEXT, 127, size)


class Transport(Protocol):
    """What the writer uses of an asyncio (or uvloop) transport."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


def find_transport(websocket: WebSocket) -> Transport | None:
    """The socket's transport when the server is uvicorn; None otherwise (send through ASGI).

    Uvicorn's ASGI `receive` and `send` are bound methods of its WebSocket protocol object, which
    holds the transport. Starlette passes `receive` through unchanged; middleware may wrap `send`.
    """
    for call in (websocket._receive, websocket._send):
        owner = getattr(call, "__self__", None)
        if owner is None or not type(owner).__module__.startswith(_UVICORN_WS):
            continue
        transport = getattr(owner, "transport", None)
        if all(hasattr(transport, name) for name in _TRANSPORT_METHODS):
            return cast(Transport, transport)
    return None


class FeedConnection:
    """One subscriber: its session, how its frames leave, and why it must end.

    `transport` is set when the writer writes the frames (None: the hub's writer task sends them
    through ASGI, woken by `wake`). `held` keeps its output back for a moment (the hub finding
    where the trade stream stands before a `subscribed` to trades goes out).
    """

    __slots__ = (
        "ended",
        "ending",
        "held",
        "key_id",
        "next_at",
        "session",
        "slot",
        "transport",
        "wake",
    )

    def __init__(self, session: FeedSession, key_id: str) -> None:
        self.session = session
        self.key_id = key_id
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()
        self.ending: Close | None = None
        self.transport: Transport | None = None
        self.held = False
        self.next_at = 0.0  # batched: when the next frame may go (event-loop time)
        self.slot: int | None = None  # the FrameWriter slot it waits in, if any

    def end(self, close: Close) -> None:
        if self.ending is None:
            self.ending = close
            self.ended.set()


class FrameWriter:
    """Writes dirty connections' frames, each connection once per flush.

    A flush runs as soon as there is output, but not sooner after the last one than `pace` times
    as long as that one took (at most `max_gap_s`). A write costs about the same whatever it
    holds (mostly the system call), so a busy process writes fewer, fuller ones and spends at
    most about 1 / (1 + pace) of its time flushing, while a quiet one adds no delay.

    Args:
        pace: the least gap between flushes, as a multiple of the last flush's duration.
        max_gap_s: the longest that gap may be.
        buffer_limit: drain a session only while its transport buffers less than this.
        recheck_s: how often a connection that could not take everything is looked at again.
        slot_s: the time granularity of those later looks.
    """

    def __init__(
        self,
        *,
        pace: float = 0.5,
        max_gap_s: float = 0.05,
        buffer_limit: int = 65_536,
        recheck_s: float = 0.02,
        slot_s: float = 0.005,
    ) -> None:
        self._pace = pace
        self._max_gap_s = max_gap_s
        self._next_at = 0.0  # the earliest loop time for the next flush
        self._buffer_limit = buffer_limit
        self._recheck_s = recheck_s
        self._slot_s = slot_s
        self._dirty: dict[FeedConnection, None] = {}
        self._groups: dict[int, Collection[FeedConnection]] = {}  # by id: each read once
        self._soon: asyncio.TimerHandle | None = None
        # Connections to look at again later, by time slot (loop time // slot_s): batched ones
        # whose next frame is not due yet, and lagging ones. Slotting keeps a flush from
        # scanning every waiting connection.
        self._slots: dict[int, list[FeedConnection]] = {}
        self._later: asyncio.TimerHandle | None = None
        self._later_slot = math.inf
        self.flushes = 0
        self.writes = 0
        self.frames = 0

    def mark(self, conn: FeedConnection) -> None:
        """`conn` has output: write it at the next flush."""
        self._dirty[conn] = None
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_at(self._next_at, self._flush)

    def mark_all(self, conns: Collection[FeedConnection]) -> None:
        """Every connection in `conns` may have output (read when the flush comes: keep it)."""
        self._groups[id(conns)] = conns
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_at(self._next_at, self._flush)

    def stop(self) -> None:
        for handle in (self._soon, self._later):
            if handle is not None:
                handle.cancel()
        self._soon = self._later = None
        self._later_slot = math.inf
        self._dirty.clear()
        self._groups.clear()
        self._slots.clear()

    # -- flushing ---------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._soon = None
        self.flushes += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        dirty, self._dirty = self._dirty, {}
        groups, self._groups = self._groups, {}
        for group in groups.values():
            dirty.update(dict.fromkeys(group))
        for conn in dirty:
            self._write(conn, now)
        end = loop.time()
        self._next_at = end + min(self._max_gap_s, (end - now) * self._pace)

    def _flush_later(self) -> None:
        armed, self._later, self._later_slot = self._later_slot, None, math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        current = max(int(now / self._slot_s), int(armed))
        for slot in sorted(s for s in self._slots if s <= current):
            for conn in self._slots.pop(slot):
                if conn.slot == slot:
                    conn.slot = None
                    self._write(conn, now)
        self._arm_later(loop)

    def _defer(self, conn: FeedConnection, at: float) -> None:
        slot = math.ceil(at / self._slot_s)
        if conn.slot is not None and conn.slot <= slot:
            return  # already waiting for an earlier look
        conn.slot = slot
        self._slots.setdefault(slot, []).append(conn)
        if slot < self._later_slot:
            self._arm_later(asyncio.get_running_loop())

    def _arm_later(self, loop: asyncio.AbstractEventLoop) -> None:
        first = min(self._slots, default=None)
        if first is None or first >= self._later_slot:
            return
        if self._later is not None:
            self._later.cancel()
        self._later_slot = first
        self._later = loop.call_at(first * self._slot_s, self._flush_later)

    def _write(self, conn: FeedConnection, now: float) -> None:
        transport, session = conn.transport, conn.session
        if transport is None or conn.held or session.close is not None or transport.is_closing():
            return  # gone or ending (the hub closes it), or held (it is marked again on release)
        batch_ms = session.batch_ms
        if batch_ms is not None and now < conn.next_at:
            if session.has_output:
                self._defer(conn, conn.next_at)
            return
        room = self._buffer_limit - transport.get_write_buffer_size()
        if room <= 0:  # the client lags: its updates wait in the outbox, conflated
            session.fold()
            self._defer(conn, now + self._recheck_s)
            return
        parts: list[bytes] = []
        if batch_ms is None:
            frames = session.write_frames(parts, room, frame_header)
        else:
            frames = 0
            while room > 0 and (frame := session.next_frame()) is not None:
                parts += (frame_header(len(frame)), frame)
                room -= len(frame)
                frames += 1
            if frames and session.batch_ms is not None:
                conn.next_at = now + session.batch_ms / 1000
        if frames:
            transport.write(b"".join(parts))
            self.writes += 1
            self.frames += frames
        if room <= 0 and session.has_output:  # the buffer is full: look again later
            session.fold()
            self._defer(conn, now + self._recheck_s)
