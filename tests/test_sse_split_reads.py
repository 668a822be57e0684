"""Where the reads of an upstream stream are cut changes nothing (pure): the SSE parser and the
verbatim relay's tap, fed a stream cut at every byte boundary, around every line end and at
random (fixed seeds), give what they give for the stream fed whole. Long events (lines of
thousands of bytes, spanning many reads), LF, CRLF and lone-CR framing, a separator split
across reads, several events per read, and events at exactly MAX_EVENT_BYTES.

No speed is asserted here: ``loadtest/sse_long_event.py`` times one long event in 16 KiB
reads."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from trioproxy.core.sse import MAX_EVENT_BYTES, SSEParser
from trioproxy.core.types import Dialect, SSEEvent, StreamEvent
from trioproxy.providers.passthrough import PassthroughTap
from trioproxy.simulator.anthropic_wire import ANTHROPIC
from trioproxy.simulator.openai_wire import OPENAI
from trioproxy.simulator.plan import Intent, make_plan
from trioproxy.simulator.responses_wire import RESPONSES

WIRES: list[Dialect] = ["openai", "anthropic", "responses"]
FRAMINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}

# --- cutting -------------------------------------------------------------------------------


def every_cut(data: bytes) -> Iterator[list[bytes]]:
    """Two reads cut at every byte boundary; then, around every line-end byte, three reads
    whose middle one is 1-3 bytes (a CR alone, a LF alone, a separator split in three)."""
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    for i, byte in enumerate(data):
        if byte in b"\r\n":
            for width in (1, 2, 3):
                yield [data[:i], data[i : i + width], data[i + width :]]


def random_reads(data: bytes, seed: int, most: int) -> list[bytes]:
    """Reads of 1..``most`` bytes, now and then one of up to 8 KB (several events)."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 8000) if rng.random() < 0.1 else rng.randint(1, most)
        out.append(data[i : i + n])
        i += n
    return out


def reads_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- the SSE parser --------------------------------------------------------------------------

LONG = (
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
    f"data: {'héllo ✓ 😀 ' * 150}\n"
    f"data: {'x' * 1500}\r"
    "\r"
    f": {'a long comment ' * 60}\r\n"
    f"event: big\r\ndata: {'y' * 2000}\r\ndata:{'z' * 700}\r\n\r\n"
    "data\n"
    "\n"
    "\n\n\r\n\r\r"  # blank lines between events
    "data: tail\n"
    "\n"
).encode()


def parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser, out = SSEParser(), []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


WHOLE = parse([LONG])


def test_the_long_stream_fed_whole() -> None:
    assert [e.event for e in WHOLE] == ["message_start", None, "ping", None, "big", None, None]
    assert WHOLE[3].data == "héllo ✓ 😀 " * 150 + "\n" + "x" * 1500
    assert WHOLE[4].data == "y" * 2000 + "\n" + "z" * 700
    assert (WHOLE[5].data, WHOLE[6].data) == ("", "tail")


def test_a_stream_cut_at_every_boundary_parses_as_fed_whole() -> None:
    for chunks in every_cut(LONG):
        assert parse(chunks) == WHOLE, [len(c) for c in chunks]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("most", [1, 7, 64, 1000])
def test_random_reads_parse_as_fed_whole(seed: int, most: int) -> None:
    assert parse(random_reads(LONG, seed, most)) == WHOLE


@pytest.mark.parametrize("seed", range(4))
def test_long_lines_in_many_reads_with_empty_reads(seed: int) -> None:
    rng = random.Random(seed)
    chunks = [
        c for chunk in random_reads(LONG, seed, 40) for c in (chunk, b"")[: rng.randint(1, 2)]
    ]
    assert parse(chunks) == WHOLE


def _line_of(total: int) -> bytes:
    """A data line of ``total`` bytes with its LF."""
    return b"data: " + b"q" * (total - 7) + b"\n"


@pytest.mark.parametrize("size", [MAX_EVENT_BYTES, 4_000_037])
def test_an_event_at_exactly_the_bound_parses_however_it_is_read(size: int) -> None:
    """A data line of MAX_EVENT_BYTES with its LF is an event (fed whole, or in reads that
    leave it open for a while); a byte more is refused, whole or in reads."""
    line = _line_of(MAX_EVENT_BYTES)
    for chunks in (reads_of(line + b"\n", size), [line[:-1], b"\n", b"\n"], [line, b"\n"]):
        parser = SSEParser()
        events = [e for chunk in chunks for e in parser.feed(chunk)]
        assert len(events) == 1 and len(events[0].data) == MAX_EVENT_BYTES - 7
    del events
    over = _line_of(MAX_EVENT_BYTES + 1)
    for chunks in (reads_of(over + b"\n", size), [over[:-1], b"\n\n"]):
        parser = SSEParser()
        with pytest.raises(ValueError, match="longer than"):
            for chunk in chunks:
                parser.feed(chunk)


def test_an_open_line_is_refused_past_the_bound_not_at_it() -> None:
    line = b"data: " + b"o" * (MAX_EVENT_BYTES - 6)  # exactly the bound, still open
    parser = SSEParser()
    for chunk in reads_of(line, 3_999_971):
        assert parser.feed(chunk) == []
    with pytest.raises(ValueError, match="longer than"):
        parser.feed(b"o")


# --- the verbatim relay's tap ------------------------------------------------------------------


def stream_bytes(wire: Dialect, tokens: int, *, tool: bool) -> bytes:
    w = {"openai": OPENAI, "anthropic": ANTHROPIC, "responses": RESPONSES}[wire]
    intent = Intent("m", 12, "what is the weather", None, True, True,
                    ("get_weather", "city") if tool else None)  # fmt: skip
    plan = make_plan(intent, tokens, "id-", 0)
    encode = w.chunk_encoder(plan)
    return w.stream_head(plan) + b"".join(encode(p) for p in plan.pieces) + w.stream_tail(plan)


def padded(data: bytes, pad: Callable[[int], int]) -> bytes:
    """The same events, the JSON of event ``n`` padded with ``pad(n)`` spaces before its
    closing brace (long events, the same meaning, still plain content when they were)."""
    events = data.split(b"\n\n")[:-1]
    return b"".join(
        (ev[:-1] + b" " * pad(n) + b"}" if ev.endswith(b"}") else ev) + b"\n\n"
        for n, ev in enumerate(events)
    )


def framed(data: bytes, framing: str) -> bytes:
    return data.replace(b"\n", FRAMINGS[framing])


Run = tuple[bytes, int, int, list[StreamEvent], bool]


def tap_reads(wire: Dialect, chunks: list[bytes], *, one_by_one: bool = False) -> Run:
    """What the tap forwards, its tokens, its content events, what it decoded, done."""
    tap = PassthroughTap(wire, include_usage=True)
    forward, content, events = [], 0, []
    for chunk in chunks:
        for got in tap.feed_events(chunk) if one_by_one else [tap.feed(chunk)]:
            assert got.error is None and got.finish is None
            forward.append(got.forward)
            content += got.content_events
            events += got.events
    return b"".join(forward), tap.output_tokens(), content, events, tap.done


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("wire", WIRES)
def test_a_stream_cut_at_every_boundary_is_relayed_as_fed_whole(
    wire: Dialect, framing: str
) -> None:
    data = padded(stream_bytes(wire, 3, tool=False), lambda n: 60 * (n % 3))
    whole = tap_reads(wire, [framed(data, framing)])
    assert whole[0] == data and whole[4] and whole[2] > 0  # LF framing; the content went by
    for chunks in every_cut(framed(data, framing)):
        assert tap_reads(wire, chunks) == whole, [len(c) for c in chunks]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("wire", WIRES)
def test_long_events_in_random_reads_are_relayed_as_fed_whole(
    wire: Dialect, framing: str, seed: int
) -> None:
    """Events of up to ~9 KB (content and tool calls) in reads of 1..200 bytes: an event spans
    dozens of reads, its blank line is split across them; one event at a time too."""
    for tool in (False, True):
        data = padded(stream_bytes(wire, 12, tool=tool), lambda n: (n * 2311 + seed) % 9000)
        whole = tap_reads(wire, [data])
        assert whole[0] == data and whole[4]
        reads = random_reads(framed(data, framing), seed, 200)
        assert tap_reads(wire, reads) == whole
        assert tap_reads(wire, reads, one_by_one=True) == tap_reads(wire, [data], one_by_one=True)


def _content_event(total: int) -> bytes:
    """An OpenAI content chunk of ``total`` bytes (without its blank line): JSON spaces
    mostly (a text that long takes its token count ~1 s, a cost that is not the tap's)."""
    head, tail = b'data: {"choices":[{"index":0,"delta":{"content":"two words"}}]', b"}"
    return head + b" " * (total - len(head) - len(tail)) + tail


def _first_event() -> bytes:
    data = stream_bytes("openai", 3, tool=False)
    return data[: data.index(b"\n\n") + 2]


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_verbatim_event_at_exactly_the_bound_goes_through(framing: str) -> None:
    """A content event one byte under MAX_EVENT_BYTES before its blank line is forwarded as
    it came, however its reads are cut (its blank line split across two); past the bound
    with no blank line yet it is refused. (At exactly the bound, the first byte of a blank
    line in the same read is counted: refused, accepted when the blank line comes whole.)"""
    sep = FRAMINGS[framing] * 2
    event = _content_event(MAX_EVENT_BYTES - 1)
    cuts = [
        [*reads_of(event, 4_000_037), sep],
        [event[:-1], event[-1:] + sep[:1], sep[1:]],
        [event + sep[: len(sep) // 2], sep[len(sep) // 2 :]],
    ]
    for chunks in cuts:
        tap = PassthroughTap("openai", include_usage=True)
        tap.feed(_first_event())
        forward = b"".join(tap.feed(chunk).forward for chunk in chunks)
        assert forward == event + b"\n\n" and tap.output_tokens() == 2
    del forward
    over = _content_event(MAX_EVENT_BYTES + 1)
    tap = PassthroughTap("openai", include_usage=True)
    tap.feed(_first_event())
    reads = reads_of(over, 4_000_037)
    for chunk in reads[:-1]:
        assert tap.feed(chunk).forward == b""
    with pytest.raises(ValueError, match="longer than"):
        tap.feed(reads[-1])
