"""An incremental Server-Sent Events parser: bytes in at any boundary, whole events out.

It follows the WHATWG event-stream rules that providers rely on: lines end in CRLF, LF or CR
(a CR may end one piece and its LF start the next), `:` lines are comments, several `data:`
lines join with newlines, a blank line dispatches, and a leading BOM is dropped. Bytes are kept
until their line is whole, so a multi-byte character split between pieces decodes intact.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from bidders.errors import UpstreamBadResponse

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SseEvent(NamedTuple):  # a tuple: built once per event on every stream, so kept cheap
    event: str  # "message" when the stream named none
    data: str


class SseParser:
    """Feed it the body as it arrives; it answers the events each piece completes."""

    def __init__(self, *, max_line_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = b""
        self._max_line = max_line_bytes
        self._skip_lf = False  # the last piece ended in CR, so an LF starting the next is its pair
        self._started = False
        self._event = ""
        self._data: list[str] = []

    @property
    def pending(self) -> bool:
        """Whether bytes or fields are held that no blank line has dispatched yet."""
        return bool(self._buffer or self._data or self._event)

    def feed(self, data: bytes) -> list[SseEvent]:
        """The events completed by `data`. Raises UpstreamBadResponse for bad UTF-8 or a line
        longer than the limit."""
        if self._skip_lf and data:
            data = data.removeprefix(b"\n")
            self._skip_lf = False
        buffer = self._buffer + data
        if not self._started:
            if _BOM.startswith(buffer):  # too short to tell yet whether a BOM opens the stream
                self._buffer = buffer
                return []
            buffer = buffer.removeprefix(_BOM)
            self._started = True
        events: list[SseEvent] = []
        if b"\r" not in buffer:  # the usual case, LF only: a plain split is several times faster
            *lines, self._buffer = buffer.split(b"\n")
            for raw in lines:
                if raw.startswith(b"data: "):  # the line every event has: `_line`, in short
                    self._data.append(_decode(raw[6:]))
                    continue
                event = self._line(raw)
                if event is not None:
                    events.append(event)
            if len(self._buffer) > self._max_line:
                raise UpstreamBadResponse(f"event-stream line longer than {self._max_line} bytes")
            return events
        start = 0
        for match in _EOL.finditer(buffer):
            if match[0] == b"\r" and match.end() == len(buffer):
                self._skip_lf = True
            event = self._line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > self._max_line:
            raise UpstreamBadResponse(f"event-stream line longer than {self._max_line} bytes")
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        line = _decode(raw)
        if not line:
            return self._dispatch()
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # comments (empty name), `id`, `retry` and unknown fields change nothing here

    def _dispatch(self) -> SseEvent | None:
        event = SseEvent(self._event or "message", "\n".join(self._data)) if self._data else None
        self._event, self._data = "", []
        return event


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UpstreamBadResponse("event stream is not valid UTF-8") from None
