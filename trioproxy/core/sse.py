"""Server-sent events: an incremental parser and an encoder.

:class:`SSEParser` follows the WHATWG event-stream rules: lines end in CRLF,
LF or CR; ``field: value`` lines (one leading space stripped); lines starting
with ``:`` are comments (keep-alive pings); a blank line dispatches the event.
Bytes may arrive split anywhere, including inside a CRLF pair or a UTF-8
sequence: lines are decoded only once complete, and a line terminator byte
never occurs inside a multi-byte UTF-8 character. An event is at most
:data:`MAX_EVENT_BYTES` (its lines so far, and a line still open): past it ``feed`` raises
``ValueError``, so that a provider that never ends an event cannot grow a worker's memory
without bound.

A line open across reads is kept as its pieces, and only the bytes of each new read are
searched for a line end: a line is joined once, when it ends (a buffer joined and split again
on every read made one long line quadratic: in 16 KiB reads an 8 MiB event took 2.0 s of CPU,
a 32 MiB one 57 s; now 0.07 s and 0.27 s, ``loadtest/sse_long_event.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

from trioproxy.core.types import SSEEvent

_BOM = "\ufeff"
MAX_EVENT_BYTES = 32 * 1024 * 1024
"""The largest event a stream may send (a Responses ``response.completed`` repeats the whole
answer, generated images included; the bound of a whole non-stream answer)."""


class SSEParser:
    """Feed raw bytes as they arrive; get back every event completed so far."""

    __slots__ = (
        "_data", "_event", "_has_data", "_open", "_open_size", "_size", "_skip_lf", "_started",
    )  # fmt: skip

    def __init__(self) -> None:
        self._open: list[bytes] = []
        """The pieces of a line not ended yet (no CR or LF among them)."""
        self._open_size = 0
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._has_data = False
        self._event: str | None = None
        self._size = 0
        """Bytes of the event's data lines so far."""

    def feed(self, data: bytes) -> list[SSEEvent]:
        if self._skip_lf and data:
            # The previous chunk ended in CR; a LF right here completes that CRLF.
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if not data:
            return []
        if self._open:  # a line open: only the new bytes are searched, it is joined at its end
            if data.find(b"\n") < 0 and data.find(b"\r") < 0:
                self._open_size += len(data)
                self._open.append(data)
                if self._open_size > MAX_EVENT_BYTES:
                    raise ValueError(f"an event longer than {MAX_EVENT_BYTES} bytes")
                return []
            self._open.append(data)
            data = b"".join(self._open)
            self._open.clear()
        lines = data.splitlines(keepends=True)
        last = lines[-1]
        if last.endswith(b"\r"):
            self._skip_lf = True
        elif not last.endswith(b"\n"):
            lines.pop()
            self._open.append(last)  # (empty until here)
            self._open_size = len(last)
            if len(last) > MAX_EVENT_BYTES:
                raise ValueError(f"an event longer than {MAX_EVENT_BYTES} bytes")
        events: list[SSEEvent] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
            if not self._started:
                self._started = True
                if line.startswith(_BOM):
                    line = line[1:]
            if not line:
                if self._has_data:
                    events.append(SSEEvent("\n".join(self._data), self._event))
                self._data = []
                self._has_data = False
                self._event = None
                self._size = 0
                continue
            if line[0] == ":":
                continue
            name, sep, value = line.partition(":")
            if sep and value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
                self._has_data = True
                self._size += len(raw)
                if self._size > MAX_EVENT_BYTES:
                    raise ValueError(f"an event longer than {MAX_EVENT_BYTES} bytes")
            elif name == "event":
                self._event = value
            # ``id`` and ``retry`` are irrelevant to a proxy; unknown fields are ignored.
        return events


def encode_sse(data: bytes | str, event: str | None = None) -> bytes:
    """Frame one event; multi-line data becomes several ``data:`` lines."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    head = b"event: " + event.encode("utf-8") + b"\n" if event is not None else b""
    if raw.find(b"\n") < 0 and raw.find(b"\r") < 0:  # not ``in``: see httpd/wire.py
        return head + b"data: " + raw + b"\n\n"
    body = b"".join(b"data: " + line + b"\n" for line in raw.splitlines())
    return head + body + b"\n"


def json_event(ev: bytes) -> tuple[bytes, Any]:
    """One whole event (without its blank line, as a relay cut it) as its ``event:`` line
    (empty when it has none) and its data parsed as JSON; ``ValueError`` when it is not
    JSON. For the few events a relay rewrites (:func:`event_bytes` writes it back)."""
    sse = next(iter(SSEParser().feed(ev + b"\n\n")))
    head = b"event: %s\n" % sse.event.encode() if sse.event else b""
    return head, orjson.loads(sse.data)


def event_bytes(head: bytes, data: Any) -> bytes:
    """An event of :func:`json_event`'s parts (``data`` as JSON), without its blank line."""
    return head + b"data: " + orjson.dumps(data)


__all__ = ["MAX_EVENT_BYTES", "SSEParser", "encode_sse", "event_bytes", "json_event"]
