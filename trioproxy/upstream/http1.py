"""One HTTP/1.1 client connection to a provider: write a request, read its response.

Responses are parsed by ``httptools`` (llhttp, the parser Node.js uses): status
line, headers, content-length and chunked framing, keep-alive. This module only
turns its callbacks into a small pull API (:meth:`H1Connection.read_head`,
:meth:`H1Connection.receive`) and writes request heads. It knows nothing of
pools, TLS or timeouts: the caller wraps every await in its own named scope.

Errors: the stream's own exceptions (``trio.BrokenResourceError``, ``OSError``)
and ``httptools.HttpParserError`` propagate; :mod:`.transport` maps them.
"""

from __future__ import annotations

import socket

import httptools
import trio

RECV_BYTES = 65_536
MAX_HEAD_BYTES = 64 * 1024
"""Bytes of a response head we accept before calling it broken."""


class ProtocolError(Exception):
    """The upstream broke HTTP/1.1 framing (closed mid-message, oversized head...)."""


def request_head(method: str, target: str, authority: str, headers: tuple[tuple[str, str], ...],
                 body_length: int) -> bytes:  # fmt: skip
    """The request line and headers; ``content-length`` framing, no hop-by-hop tricks."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {authority}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def plain_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain ``trio.SocketStream`` (None under TLS or a tunnel
    wrapper). trio keeps it as ``SocketType._sock``; we call only its non-blocking
    ``send``/``recv``, after trio's own ``wait_readable``. Shared with the data-plane server
    (:mod:`trioproxy.httpd.conn`)."""
    if type(stream) is not trio.SocketStream:
        return None
    sock = getattr(stream.socket, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


JOIN_MAX = 65_536
"""A request body up to this size goes out in one write with its head (one copy, one
syscall); a larger one is written after the head, uncopied."""


class H1Connection:
    """An open connection: one request/response exchange at a time, reusable when clean."""

    __slots__ = (
        "_body", "_complete", "_head_bytes", "_head_done", "_header_name", "_headers",
        "_keep_alive", "_parser", "_sock", "_until_eof", "exchanges", "idle_since", "raw_socket",
        "stream",
    )  # fmt: skip

    def __init__(self, stream: trio.abc.Stream, raw_socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.raw_socket = raw_socket
        """The TCP socket under any TLS/tunnel layers, for liveness checks."""
        self._sock = plain_socket(stream)
        """The stdlib socket when ``stream`` is plain TCP: read and written directly."""
        self.exchanges = 0
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._header_name = ""
        self._body: list[bytes] = []
        self._head_done = False
        self._complete = False
        self._head_bytes = 0
        self._until_eof = False
        self._keep_alive = False

    # --- httptools callbacks ---------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational (103 Early Hints...): wait for the real one
            self._headers = {}
            return
        self._head_done = True
        self._until_eof = (
            "content-length" not in self._headers and "transfer-encoding" not in self._headers
        )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._head_done:
            self._complete = True
            self._keep_alive = bool(self._parser.should_keep_alive())  # valid only in here

    # --- the exchange ------------------------------------------------------------

    @property
    def status(self) -> int:
        return int(self._parser.get_status_code())

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def complete(self) -> bool:
        """The whole response has been read."""
        return self._complete

    @property
    def reusable(self) -> bool:
        """Clean end of a keep-alive exchange: the connection may carry the next request."""
        return self._complete and not self._until_eof and not self._body and self._keep_alive

    async def send_request(self, head: bytes, body: bytes) -> None:
        if self.exchanges:
            self._reset()
        self.exchanges += 1
        if len(body) > JOIN_MAX:
            await self.stream.send_all(head)
            await self.stream.send_all(body)
            return
        data = head + body
        sock = self._sock
        if sock is not None:  # most requests fit the socket buffer: no task switch
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        await self.stream.send_all(data)

    async def _read_some(self) -> bytes | bytearray:
        sock = self._sock
        if sock is None:
            return await self.stream.receive_some(RECV_BYTES)
        # plain TCP: wait, then read (a stream's next bytes are rarely there already, so
        # trying first would mostly fail); the wait is the checkpoint
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue

    async def _feed_more(self) -> bool:
        """Read once and feed the parser; ``False`` at end of input."""
        data = await self._read_some()
        if not data:
            return False
        self._parser.feed_data(data)
        if not self._head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                raise ProtocolError("response head too large")
        return True

    async def read_head(self) -> None:
        """Read until the status line and headers are in (:attr:`status`, :attr:`headers`)."""
        while not self._head_done:
            if not await self._feed_more():
                raise ProtocolError("connection closed before a response")

    async def receive(self) -> bytes:
        """The next body bytes as they arrive (de-chunked); ``b""`` at the end of the body."""
        body = self._body
        while not body:  # _feed_more inlined: this is once per relayed chunk
            if self._complete:
                return b""
            sock = self._sock
            if sock is None:
                data = await self.stream.receive_some(RECV_BYTES)
            else:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECV_BYTES)
                except BlockingIOError:
                    continue
            if not data:
                if self._until_eof:
                    self._complete = True
                    return b""
                raise ProtocolError("connection closed in the middle of the response body")
            self._parser.feed_data(data)
            if not self._head_done:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
        if len(body) == 1:
            data = body[0]
        else:
            data = b"".join(body)
        body.clear()
        return data

    def take_buffered(self) -> bytes:
        """Body bytes already parsed but not yet taken (no I/O)."""
        data = b"".join(self._body)
        self._body.clear()
        return data

    def looks_alive(self) -> bool:
        """Checks an idle connection without blocking: readable means dead.

        Between exchanges a healthy upstream sends nothing; a readable socket
        holds an EOF, a reset, a TLS close_notify or stray bytes. TLS 1.3
        session tickets arrive right after the handshake and are consumed with
        the first response, before the connection is ever idle.
        """
        try:
            return not self.raw_socket.is_readable()
        except OSError:
            return False

    def close(self) -> None:
        """Close at once (no TLS close_notify): for broken, abandoned or evicted connections."""
        self.raw_socket.close()


__all__ = ["MAX_HEAD_BYTES", "H1Connection", "ProtocolError", "request_head"]
