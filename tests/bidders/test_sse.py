"""The incremental SSE parser: same events whatever the piece boundaries, per the WHATWG rules."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bidders.errors import UpstreamBadResponse
from bidders.sse import SseEvent, SseParser

STREAM = (
    b": keep-alive comment\r\n"
    b"\r\n"
    b"event: message_start\r\n"
    b'data: {"text": "caf\xc3\xa9"}\r\n'
    b"\r\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b"data:first line\n"
    b"data: second line\n"
    b"data\n"
    b"\n"
    b"event: lonely\r"
    b"\r"
    b"data: done\r"
    b"\r"
)
EVENTS = [
    SseEvent("message_start", '{"text": "café"}'),
    SseEvent("message", "first line\nsecond line\n"),
    SseEvent("message", "done"),
]


def _parse(pieces: list[bytes]) -> list[SseEvent]:
    parser = SseParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert not parser.pending
    return events


def test_whole_stream() -> None:
    assert _parse([STREAM]) == EVENTS


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_any_single_cut_gives_the_same_events(cut: int) -> None:
    assert _parse([STREAM[:cut], STREAM[cut:]]) == EVENTS


def test_byte_by_byte_with_empty_pieces() -> None:
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert _parse([b"", *pieces, b""]) == EVENTS


@pytest.mark.parametrize("cut", range(4))
def test_a_leading_bom_is_dropped_even_when_split(cut: int) -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    assert _parse([body[:cut], body[cut:]]) == [SseEvent("message", "x")]


def test_a_bom_later_in_the_stream_is_data() -> None:
    assert _parse([b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n"]) == [SseEvent("message", "a")]


def test_an_unfinished_event_is_pending_and_not_dispatched() -> None:
    parser = SseParser()
    assert parser.feed(b"event: x\ndata: partial\n") == []
    assert parser.pending
    assert parser.feed(b"\n") == [SseEvent("x", "partial")]
    assert not parser.pending


def test_bad_utf8_is_a_bad_response() -> None:
    with pytest.raises(UpstreamBadResponse, match="not valid UTF-8"):
        SseParser().feed(b"data: \xff\xfe\n\n")


def test_an_endless_line_is_a_bad_response() -> None:
    parser = SseParser(max_line_bytes=64)
    assert parser.feed(b"data: " + b"x" * 58) == []
    with pytest.raises(UpstreamBadResponse, match="longer than 64 bytes"):
        parser.feed(b"x")


# -- property: any stream, any pieces, the same events as a whole-body reference parser ----------

_LINES = st.sampled_from(
    ["", "", "data: x", "data:y", "data", "data:  two", "data: café", "event: e", "event:",
     ": comment", "id: 1", "retry: 5", "other: z", "data: {\"a\": [1]}"]
)  # fmt: skip


def _reference(body: bytes) -> list[SseEvent]:
    """The WHATWG rules over the whole body at once, written as plainly as possible."""
    events: list[SseEvent] = []
    event, data = "", list[str]()
    for line in re.split(r"\r\n|\r|\n", body.decode().removeprefix("\ufeff"))[:-1]:
        if not line:
            if data:
                events.append(SseEvent(event or "message", "\n".join(data)))
            event, data = "", []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    return events


@given(
    lines=st.lists(_LINES, max_size=30),
    endings=st.lists(st.sampled_from(["\n", "\n", "\r\n", "\r"]), min_size=1, max_size=30),
    lf_only=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_pieces_never_change_the_events(
    lines: list[str], endings: list[str], lf_only: bool, cuts: list[int]
) -> None:
    text = "".join(
        line + ("\n" if lf_only else endings[i % len(endings)]) for i, line in enumerate(lines)
    )
    body = text.encode()
    bounds = sorted({min(cut, len(body)) for cut in cuts} | {0, len(body)})
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    parser = SseParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert events == _reference(body)
