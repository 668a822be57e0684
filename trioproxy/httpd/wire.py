"""Response framing for the data-plane server: the status line, headers and chunks (pure)."""

from __future__ import annotations

import http
from collections.abc import Iterable

_REASONS = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


class BadHeader(ValueError):
    """The app tried to send a header that would break the framing."""


def response_head(
    status: int, headers: Iterable[tuple[bytes, bytes]], extra: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """``HTTP/1.1 <status>`` with ``headers`` then ``extra`` (framing headers we add).

    The app's headers are checked all at once: their lines hold one CR and one LF each, and
    no name a colon. (Not with ``b"x" in value`` per header: in CPython 3.11 a bytes
    ``in`` first tries its operand as an integer and raises and clears a TypeError each
    time, ~90 ns; a response's headers took ~40 of them.)"""
    pairs = headers if isinstance(headers, list) else list(headers)
    own = b"".join([b"%s: %s\r\n" % (name, value) for name, value in pairs])
    n = len(pairs)
    if (
        own.count(b"\n") != n
        or own.count(b"\r") != n
        or b"".join([name for name, _value in pairs]).find(b":") >= 0
    ):
        bad = next(
            (name for name, value in pairs
             if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name
             or b":" in name),
            b"?",  # a name or value that is not bytes (a memoryview): still refused
        )  # fmt: skip
        raise BadHeader(f"invalid response header {bad!r}")
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
    tail = b"".join([b"%s: %s\r\n" % (name, value) for name, value in extra])
    return head + own + tail + b"\r\n"


CLOSE = (b"connection", b"close")
KEEP_ALIVE = (b"connection", b"keep-alive")


def framing(
    status: int, headers: Iterable[tuple[bytes, bytes]], body_len: int, more: bool, *,
    http10: bool, close: bool,
) -> tuple[list[tuple[bytes, bytes]], bool, bool]:  # fmt: skip
    """How a response is framed, decided with its first body part (``body_len`` bytes,
    ``more`` to come): (the framing headers we add, chunked, close after it).

    The app's own ``content-length`` is kept; else a whole body gets one, a streamed one
    chunked coding, or, for HTTP/1.0 (no chunked coding), the close ends it. ``close``
    (the request asked for it, or the server drains) adds ``connection: close``; an HTTP/1.0
    client keeps the connection only when told ``keep-alive``.
    """
    extra: list[tuple[bytes, bytes]] = []
    chunked = False
    has_length = any(name.lower() == b"content-length" for name, _value in headers)
    if not has_length and status >= 200 and status not in (204, 304):
        if more and http10:
            close = True
        elif more:
            chunked = True
            extra.append((b"transfer-encoding", b"chunked"))
        else:
            extra.append((b"content-length", b"%d" % body_len))
    if close:
        extra.append(CLOSE)
    elif http10:
        extra.append(KEEP_ALIVE)
    return extra, chunked, close


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data is no chunk: it would end the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


__all__ = [
    "CLOSE",
    "CONTINUE",
    "KEEP_ALIVE",
    "LAST_CHUNK",
    "BadHeader",
    "chunk",
    "framing",
    "response_head",
]
