"""One client connection: a loop that serves its requests to the ASGI app and writes the
answers, over the reader task of :mod:`trioproxy.httpd.reader` (which parses, pauses and
sees the client leave). Requests are answered in order, one at a time. Every wait has a
deadline: the head (``header_timeout_s``), the idle keep-alive (``keep_alive_s``), the body
(``body_deadline``), each write to the client (``send_timeout_s``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.httpd.closing import CLOSE_TIMEOUT_S, close
from trioproxy.httpd.limits import body_deadline
from trioproxy.httpd.parse import Request
from trioproxy.httpd.reader import ConnectionReader
from trioproxy.httpd.wire import CLOSE, CONTINUE, LAST_CHUNK, chunk, framing, response_head

if TYPE_CHECKING:
    from trioproxy.httpd.server import HttpServer

log = logging.getLogger("trioproxy.httpd")

ASGI = {"version": "3.0", "spec_version": "2.3"}
DISCONNECT = {"type": "http.disconnect"}


class Connection(ConnectionReader):
    __slots__ = (  # one per open connection: no instance dict (~1.2 KB each)
        "_body_t0",
        "_broken",
        "_chunked",
        "_close_after",
        "_done",
        "_final_body",
        "_head_pending",
        "_headers",
        "_linger_needed",
        "_req",
        "_started",
        "_status",
        "_writing",
        "body_timed_out",
        "client",
        "idle",
        "local",
        "scheme",
        "server",
    )

    def __init__(
        self,
        server: HttpServer,
        stream: trio.abc.Stream,
        scheme: str,
        client: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> None:
        super().__init__(stream, server.limits)
        self.server = server
        self._writing = False
        """A ``send_all`` is in progress (a write that would have blocked)."""
        self.scheme = scheme
        self.client = client
        self.local = local
        # the request being served
        self._req: Request | None = None
        self._started = False
        self._done = False
        self._head_pending = False
        self._status = 200
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunked = False
        self._broken = False
        self._linger_needed = False
        self._close_after = False
        self._final_body = False
        self._body_t0 = 0.0
        self.body_timed_out = False
        self.idle = True

    # serving ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read)
                await self._serve()
                nursery.cancel_scope.cancel()
        finally:
            await self._close()

    async def _serve(self) -> None:
        deadline = trio.current_time() + self.limits.header_timeout_s
        while True:
            req = await self._next_head(deadline)
            if req is None:
                return
            self.idle = False
            keep = await self._respond(req)
            self.idle = True
            if not keep or self.server.draining:
                return
            deadline = trio.current_time() + self.limits.keep_alive_s

    async def _next_head(self, idle_deadline: float) -> Request | None:
        parser = self.parser
        while True:
            if parser.heads:
                req = parser.heads.pop(0)
                self._resume.unpark_all()
                return req
            if self.error is not None:
                err = self.error
                await self._send_plain(err.status, err.message, err.path, err.method)
                return None
            if self.eof or (self.server.draining and not parser.in_head):
                return None
            if parser.in_head:
                deadline = self._head_started + self.limits.header_timeout_s
            else:
                deadline = idle_deadline
            with trio.move_on_at(deadline):
                await self.lot.park()
                continue
            if await self._reader_caught_up():
                continue
            if parser.in_head:
                await self._send_plain(408, "Request head not received in time.", *parser.target())
            return None

    def _scope(self, req: Request) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": ASGI,
            "http_version": req.http_version,
            "method": req.method,
            "scheme": self.scheme,
            "path": req.path,
            "raw_path": req.raw_path,
            "query_string": req.query,
            "root_path": "",
            "headers": req.headers,
            "client": self.client,
            "server": self.local,
            "trioproxy.t0": self._body_t0,  # the request's start (a refusal's latency)
            "trioproxy.write_body": self.write_body,
            "trioproxy.on_disconnect": self.on_disconnect,
            "trioproxy.body_ready": self.body_ready,
        }

    async def _respond(self, req: Request) -> bool:
        """Run the app for ``req``; whether the connection may serve another request."""
        self._req = req
        self._started = self._done = self._final_body = self.body_timed_out = False
        self._head_pending = False
        self._close_after = not req.keep_alive or self.server.draining
        self._body_t0 = trio.current_time()
        server = self.server
        server.requests += 1
        try:
            await server.app(self._scope(req), self._receive, self._send)
        except Exception:
            log.exception("unhandled error in the app for %s %s", req.method, req.path)
            if not self._started:
                await self._send_plain(500, "Internal server error.", req.path, req.method)
            return False
        finally:
            server.requests -= 1
            self._req = None
            self._gone = None
        if not self._started:
            if self.error is not None:  # the body broke the protocol or a cap
                err = self.error
                await self._send_plain(err.status, err.message, req.path, req.method)
            elif self.body_timed_out:
                await self._send_plain(408, "Request body not received in time.", req.path,
                                       req.method)  # fmt: skip
            elif not self.eof:
                await self._send_plain(500, "The app sent no response.", req.path, req.method)
            return False
        if not self._done:
            return False
        req.body.clear()
        return req.complete and not self._close_after and not self.eof

    # the ASGI callables --------------------------------------------------------------

    async def _receive(self) -> dict[str, Any]:
        req = self._req
        if req is None:
            return DISCONNECT
        if not self._final_body:
            while True:
                if req.buffered:
                    data = req.take_body()
                    self._resume.unpark_all()
                    more = not req.complete
                    self._final_body = not more
                    return {"type": "http.request", "body": data, "more_body": more}
                if req.complete:
                    self._final_body = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if self.eof or self.error is not None:
                    return DISCONNECT
                if req.expect_continue and not self._started:
                    req.expect_continue = False
                    await self._write(CONTINUE)
                deadline = body_deadline(self.limits, self._body_t0, req.received)
                with trio.move_on_at(deadline):
                    await self.lot.park()
                    continue
                if await self._reader_caught_up():
                    continue
                self.body_timed_out = True
                return DISCONNECT
        while not (self.eof or self._done):
            await self.lot.park()
        return DISCONNECT

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self._started or self._done:
                raise RuntimeError("http.response.body outside a response")
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            head = None
            if self._head_pending:
                self._head_pending = False
                head = self._build_head(body, more)
            if self._chunked:
                data = chunk(body) + LAST_CHUNK if not more else chunk(body)
            else:
                data = body
            if self._req is not None and self._req.method == "HEAD":
                data = b""
            if not more:
                self._done = True
            if head is not None:
                data = head + data
            if data:
                await self._write(data)
            if not more:
                self.lot.unpark_all()
        elif kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start sent twice")
            self._started = True
            req = self._req
            if req is not None and not req.complete:
                self._close_after = True  # the rest of the body will not be read
                self._linger_needed = True
            self._status = int(message["status"])
            self._headers = message.get("headers", [])
            self._head_pending = True  # written with the first body message (one write)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def write_body(self, data: bytes) -> None:
        """``http.response.body`` with ``more_body`` once the head is out, without a
        message: the verbatim relay's per-chunk write (offered in the scope as
        ``trioproxy.write_body``; the message path costs ~2 µs more per chunk). Before the
        head or after the end it is that message, with the same checks."""
        if self._head_pending or not self._started or self._done:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
            return
        req = self._req
        if not data or req is None or req.method == "HEAD":
            return
        await self._write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    def _build_head(self, body: bytes, more: bool) -> bytes:
        http10 = self._req is not None and self._req.http_version == "1.0"
        extra, self._chunked, self._close_after = framing(
            self._status, self._headers, len(body), more, http10=http10,
            close=self._close_after or self.server.draining,
        )  # fmt: skip
        return response_head(self._status, self._headers, extra)

    # writing and closing --------------------------------------------------------------

    async def _write(self, data: bytes | memoryview) -> None:
        """Write ``data`` whole. On plain TCP the bytes go straight to the socket when its
        buffer has room (the usual case: no task switch); only the rest, if any, waits
        through ``send_all``. Not a checkpoint when nothing had to wait."""
        if self._broken:
            return
        sock = self._sock
        if sock is not None and not self._writing:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost()
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # the rest, uncopied
        self._writing = True
        try:
            with trio.move_on_after(self.limits.send_timeout_s) as scope:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost()
            return
        except trio.Cancelled:  # part of ``data`` may be out: nothing can follow it
            self._lost()
            raise
        finally:
            self._writing = False
        if scope.cancelled_caught:  # the client stopped reading: as if it had left
            log.info("client %s took no bytes for %.0f s; closing the connection",
                     self.client, self.limits.send_timeout_s)  # fmt: skip
            self._lost()

    def _lost(self) -> None:
        """The connection cannot carry more bytes: the app sees a disconnect."""
        self._broken = True
        self._disconnected()

    def body_ready(self) -> bool:
        """The running request's body is all in (offered in the ASGI scope as
        ``trioproxy.body_ready``): ``receive`` answers it whole at once, without waiting, so
        the app need not arm what would interrupt a wait for it."""
        req = self._req
        return req is not None and req.complete and not self._final_body

    async def _send_plain(
        self, status: int, message: str, path: str | None, method: str | None = None
    ) -> None:
        """A whole response from the server itself (refusals, timeouts); then we close."""
        headers, body = self.server.refuse(method, path, status, message)
        head = response_head(
            status,
            headers,
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
             CLOSE],
        )  # fmt: skip
        self._close_after = self._linger_needed = True
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self._write(head + body)

    async def _close(self) -> None:
        await close(self.stream, linger=self._linger_needed and not self.eof and not self._broken)


__all__ = ["Connection"]
