"""Request parsing for the data-plane server: llhttp (``httptools``) plus a head policy.

Bytes in, :class:`Request` values out, no I/O. llhttp does all the HTTP parsing in
strict mode (it already refuses Content-Length together with Transfer-Encoding,
duplicate Content-Length, bad chunk sizes, obs-fold and invalid header tokens); on
top of it this module only checks what llhttp leaves to the application: the
protocol version, ``Host``, the only transfer coding we accept (``chunked``), and
the size caps. Any refusal is a :class:`ProtocolError` carrying the status to send
before the connection closes.
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools

from trioproxy.httpd.limits import HttpLimits


class ProtocolError(Exception):
    """The client broke HTTP/1.1 or a cap; answer ``status`` and close the connection."""

    def __init__(
        self, status: int, message: str, path: str | None = None, method: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path
        """The request's path when known (the refusal is written in its endpoint's dialect)."""
        self.method = method
        """The request's method when its head was parsed that far (for the access line)."""


class Request:
    """One request as parsed; the body arrives into ``body`` as the connection reads it."""

    __slots__ = (
        "body",
        "buffered",
        "complete",
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "received",
        "target",
    )

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        """The request target as sent."""
        self.raw_path = b""
        self.path = ""
        self.query = b""
        self.http_version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.expect_continue = False
        self.body: list[bytes] = []
        self.buffered = 0
        """Body bytes parsed and not yet handed to the app."""
        self.received = 0
        """Body bytes parsed so far."""
        self.complete = False
        """The whole body has been parsed."""

    def take_body(self) -> bytes:
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        return data


class RequestParser:
    """Feed bytes; complete heads queue up in ``heads``; ``current`` receives body bytes."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self.heads: list[Request] = []
        """Requests whose head is complete, oldest first, not yet taken by the server (a
        list: pipelined heads are few, the reader pauses at ``max_pipelined``; an empty
        deque is 760 bytes per connection)."""
        self.current: Request | None = None
        """The request whose head or body is being parsed."""
        self.in_head = False
        """A request has begun and its head is not complete yet."""
        self._began_in_chunk = False
        self._head_bytes = 0
        self._url = b""
        self._head_size = 0
        self._error: ProtocolError | None = None
        self.bytes_fed = 0

    def feed(self, data: bytes | bytearray) -> None:
        """Parse ``data``; raise :class:`ProtocolError` on anything we refuse."""
        self._began_in_chunk = False
        self.bytes_fed += len(data)
        while True:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = self._ignore_upgrade(data, exc)
                if data:
                    continue
            except httptools.HttpParserError as exc:
                if self._error is not None:
                    raise self._error from None
                raise ProtocolError(
                    400, f"Malformed HTTP request: {exc}.", *self.target()
                ) from None
            break
        if self.in_head:
            # A head still incomplete: bound its bytes (the chunk it began in is not
            # counted, so the bound is max_head_bytes plus at most one read).
            if not self._began_in_chunk:
                self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                raise ProtocolError(431, "Request head too large.", *self.target())

    def target(self) -> tuple[str | None, str | None]:
        """The path and method of the request being parsed, as far as its head has come:
        a refusal before the head ends is still written in the dialect of the path its
        request line named (and logged with both); ``(None, None)`` before the target."""
        current = self.current
        if current is not None and current.path:
            return current.path, current.method or None
        if current is None or not self._url:
            return None, None
        try:  # the method comes before the target on the request line: llhttp has it
            method: str | None = self._parser.get_method().decode("ascii")
        except (httptools.HttpParserError, UnicodeDecodeError):
            method = None
        return _path_of(self._url), method

    def _ignore_upgrade(
        self, data: bytes | bytearray, exc: httptools.HttpParserUpgrade
    ) -> bytes | bytearray:
        """A request asked to switch protocols (``Upgrade``, or ``CONNECT``), which llhttp
        reports after its head, taking whatever follows as the new protocol's bytes.

        We speak HTTP/1.1 only, so the upgrade is ignored (RFC 9110 §7.8): a request
        without a body is served as it is and parsing goes on with the next one (the bytes
        after it). One with a body, whose framing llhttp gave up, and ``CONNECT`` are
        refused with a single 501, never handed to the app.
        """
        req = self.heads[-1] if self.heads else None
        if req is None or req.method == "CONNECT" or _declares_body(req):
            if req is not None:
                self.heads.pop()
            raise ProtocolError(
                501, "Protocol upgrades are not supported.", req.path if req else None,
                req.method if req else None,
            )  # fmt: skip
        self._parser = httptools.HttpRequestParser(self)
        offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
        return data[offset:]

    # llhttp callbacks -------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        self._error = ProtocolError(status, message, *self.target())
        raise self._error

    def on_message_begin(self) -> None:
        self.current = Request()
        self.in_head = True
        self._began_in_chunk = True
        self._head_bytes = 0
        self._url = b""
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.limits.max_head_bytes:
            self._refuse(414, "Request target too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        assert req is not None
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_head_bytes:
            self._refuse(431, "Request head too large.")
        if len(req.headers) >= self.limits.max_headers:
            self._refuse(431, "Too many request headers.")
        if value and value[-1] in (32, 9):  # llhttp keeps trailing OWS; it is not the value
            value = value.rstrip(b" \t")
        req.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        parser = self._parser
        req.http_version = parser.get_http_version()
        if req.http_version not in ("1.1", "1.0"):
            self._refuse(505, "Only HTTP/1.1 and HTTP/1.0 are supported.")
        req.method = parser.get_method().decode("ascii")
        req.keep_alive = parser.should_keep_alive()
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            self._refuse(400, "Malformed request target.")
        req.target = self._url
        raw = url.path or b"/"
        req.raw_path = raw
        req.path = _decoded(raw)
        req.query = url.query or b""
        self._check_framing(req)
        self.in_head = False
        self.heads.append(req)

    def _check_framing(self, req: Request) -> None:
        hosts = 0
        for name, value in req.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                if req.http_version == "1.0":
                    self._refuse(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
                if value.strip().lower() != b"chunked":
                    self._refuse(501, "Only the chunked transfer coding is supported.")
            elif name == b"content-length":
                if int(value) > self.limits.max_body_bytes:
                    self._refuse(413, f"Request body exceeds {self.limits.max_body_bytes} bytes.")
            elif name == b"expect":
                if value.lower() != b"100-continue":
                    self._refuse(417, "Only Expect: 100-continue is supported.")
                req.expect_continue = req.http_version == "1.1"
        if hosts > 1 or (hosts == 0 and req.http_version == "1.1"):
            self._refuse(400, "An HTTP/1.1 request needs exactly one Host header.")

    def on_body(self, body: bytes) -> None:
        req = self.current
        assert req is not None
        req.received += len(body)
        if req.received > self.limits.max_body_bytes:
            self._refuse(413, f"Request body exceeds {self.limits.max_body_bytes} bytes.")
        req.body.append(body)
        req.buffered += len(body)

    def on_message_complete(self) -> None:
        req = self.current
        assert req is not None
        req.complete = True
        self.current = None


def _decoded(raw_path: bytes) -> str:
    text = raw_path.decode("latin-1")
    return unquote(text) if "%" in text else text


def _path_of(url: bytes) -> str | None:
    """The path of a request target (None if it does not parse)."""
    try:
        return _decoded(httptools.parse_url(url).path or b"/")
    except httptools.HttpParserInvalidURLError:
        return None


def _declares_body(req: Request) -> bool:
    for name, value in req.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and int(value) > 0):
            return True
    return False


__all__ = ["ProtocolError", "Request", "RequestParser"]
