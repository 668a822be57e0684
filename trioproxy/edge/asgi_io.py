"""Small ASGI helpers: read a capped JSON body, send a whole response, watch for disconnect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol

import trio

from trioproxy.errors import CallerError, ErrorKind

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


def check_media_type(headers: dict[bytes, bytes]) -> None:
    """Refuse (415) a body whose ``Content-Type`` declares anything but JSON in UTF-8
    (``application/json`` or ``application/*+json``, a ``charset`` only ``utf-8``), before it
    is read. Without a ``Content-Type`` the body is parsed as JSON (a clear 400 if it is not):
    minimal clients omit it, and no provider's SDK sends anything else."""
    declared = headers.get(b"content-type")
    if declared is None or declared == b"application/json":
        return
    media, *params = (p.strip().lower() for p in declared.split(b";"))
    json = media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )
    charsets = [p.partition(b"=")[2].strip(b'" ') for p in params if p.startswith(b"charset=")]
    if (json or not media) and all(c in (b"utf-8", b"utf8") for c in charsets):
        return
    shown = declared.decode("latin-1")[:100]
    raise CallerError(
        ErrorKind.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {shown!r} is not supported: send the body as application/json (UTF-8).",
    )


def check_content_encoding(headers: dict[bytes, bytes]) -> None:
    """Refuse (415, RFC 9110 §8.4) a body sent with a ``Content-Encoding`` other than
    ``identity``, before it is read: bodies are parsed as sent, so a gzip body would be a 400
    about invalid UTF-8, and one that claims a coding it does not have is no better."""
    declared = headers.get(b"content-encoding")
    if declared is None:
        return
    if all(c.strip().lower() in (b"", b"identity") for c in declared.split(b",")):
        return
    shown = declared.decode("latin-1")[:100]
    raise CallerError(
        ErrorKind.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Encoding {shown!r} is not supported: send the body uncompressed.",
    )


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The body, at most ``limit`` bytes (413), declared as JSON or not at all, and not
    compressed (415)."""
    check_media_type(headers)
    check_content_encoding(headers)
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise CallerError(ErrorKind.BODY_TOO_LARGE, f"Request body exceeds {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise CallerError(ErrorKind.BODY_TOO_LARGE, f"Request body exceeds {limit} bytes.")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_whole(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send(
        {"type": "http.response.start", "status": status, "headers": [JSON, length, *headers]}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Watched(Protocol):
    """What :func:`watch_disconnect` reads and marks: the response's delivery state."""

    responded: bool
    client_gone: bool


async def watch_disconnect(receive: Receive, scope: trio.CancelScope, state: Watched) -> None:
    """Cancel ``scope`` (and mark ``state.client_gone``) when the client goes away before
    its response is complete.

    The server also reports ``http.disconnect`` while it finishes a complete
    response (inside our last ``send``, where it recycles or closes the
    connection); cancelling then would abort that bookkeeping and leave the
    connection open, so a disconnect after ``state.responded`` only ends the watch.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not state.responded:
                state.client_gone = True
                scope.cancel()
            return


__all__ = [
    "JSON",
    "SSE_HEADERS",
    "ClientGone",
    "Headers",
    "Receive",
    "Scope",
    "Send",
    "read_body",
    "send_whole",
    "watch_disconnect",
]
