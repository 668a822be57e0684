from __future__ import annotations

import pytest

from trioproxy.core.sse import SSEParser, encode_sse
from trioproxy.core.types import SSEEvent

TRANSCRIPT = (
    ": keep-alive\n"
    "event: message_start\n"
    'data: {"type":"message_start"}\n'
    "\n"
    "data: line one\r\n"
    "data: line two\r\n"
    "\r\n"
    "event: ping\r"
    "data:no-space\r"
    "\r"
    "data: héllo ✓ 😀\n"
    "\n"
    "event: empty-is-dropped\n"
    "\n"
    "data\n"
    "\n"
    "id: 7\n"
    "retry: 100\n"
    "data:  two spaces\n"
    "\n"
).encode()

EXPECTED = [
    SSEEvent('{"type":"message_start"}', "message_start"),
    SSEEvent("line one\nline two"),
    SSEEvent("no-space", "ping"),
    SSEEvent("héllo ✓ 😀"),
    SSEEvent(""),
    SSEEvent(" two spaces"),
]


def feed_all(parser: SSEParser, chunks: list[bytes]) -> list[SSEEvent]:
    out: list[SSEEvent] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def test_whole_transcript() -> None:
    assert SSEParser().feed(TRANSCRIPT) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(TRANSCRIPT)))
def test_split_at_every_offset(cut: int) -> None:
    assert feed_all(SSEParser(), [TRANSCRIPT[:cut], TRANSCRIPT[cut:]]) == EXPECTED


def test_byte_at_a_time() -> None:
    chunks = [TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT))]
    assert feed_all(SSEParser(), chunks) == EXPECTED


def test_three_way_splits_around_crlf_and_utf8() -> None:
    data = "data: 😀\r\n\r\ndata: b\r\n\r\n".encode()
    for i in range(1, len(data)):
        for j in range(i, len(data)):
            got = feed_all(SSEParser(), [data[:i], data[i:j], data[j:]])
            assert got == [SSEEvent("😀"), SSEEvent("b")], (i, j)


def test_incomplete_event_is_not_dispatched() -> None:
    p = SSEParser()
    assert p.feed(b"data: partial\n") == []
    assert p.feed(b"data: more") == []
    assert p.feed(b"\n\n") == [SSEEvent("partial\nmore")]


def test_leading_bom_is_stripped() -> None:
    assert SSEParser().feed(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("x")]


def test_empty_feed() -> None:
    assert SSEParser().feed(b"") == []


def test_encode() -> None:
    assert encode_sse(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_sse("x", event="ping") == b"event: ping\ndata: x\n\n"
    assert encode_sse("a\nb") == b"data: a\ndata: b\n\n"


@pytest.mark.parametrize("data", ["", "x", "a\nb", "a\r\nb", "😀 : colon", "  spaced"])
def test_encode_parse_round_trip(data: str) -> None:
    expected = data.replace("\r\n", "\n")
    assert SSEParser().feed(encode_sse(data, event="e")) == [SSEEvent(expected, "e")]


def test_an_event_that_never_ends_is_refused_at_its_bound() -> None:
    """A provider that never ends a line, or an event of endless data lines, grew the
    stream's buffer without bound; past MAX_EVENT_BYTES it is an error (the stream is
    interrupted), and an event just under it still parses."""
    from trioproxy.core.sse import MAX_EVENT_BYTES

    parser = SSEParser()
    parser.feed(b"data: " + b"x" * (MAX_EVENT_BYTES - 100))  # an open line under the bound
    with pytest.raises(ValueError, match="longer than"):
        parser.feed(b"x" * 200)
    lines = SSEParser()
    line = b"data: " + b"y" * (1024 * 1024) + b"\n"
    with pytest.raises(ValueError, match="longer than"):
        lines.feed(line * 33)
    ok = SSEParser()
    (event,) = ok.feed(line * 3 + b"\n")
    assert len(event.data) == 3 * 1024 * 1024 + 2


def test_a_verbatim_event_that_never_ends_is_refused_at_its_bound() -> None:
    from trioproxy.core.sse import MAX_EVENT_BYTES
    from trioproxy.providers.passthrough import PassthroughTap

    tap = PassthroughTap("openai", include_usage=True)
    tap.feed(b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\n')
    tap.feed(b'data: {"choices":[{"index":0,"delta":{"content":"' + b"z" * (MAX_EVENT_BYTES - 64))
    with pytest.raises(ValueError, match="longer than"):
        tap.feed(b"z" * 128)
