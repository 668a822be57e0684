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
    """``HTTP/1.1 <status>`` with ``headers`` then ``extra`` (framing headers we add)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    for name, value in headers:
        if b"\n" in value or b"\r" in value or b"\n" in name or b":" in name:
            raise BadHeader(f"invalid response header {name!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    for name, value in extra:
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data is no chunk: it would end the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


__all__ = ["CONTINUE", "LAST_CHUNK", "BadHeader", "chunk", "response_head"]
