"""The data-plane HTTP/1.1 server: listeners, connections, lifespan and drain.

``HttpServer(app, limits).serve(open_listeners, shutdown=event, ...)`` runs the app's
lifespan start-up, then opens its listeners and accepts connections until
``shutdown`` is set, then drains:

1. ``on_drain()`` is called (the gateway's ``/readyz`` turns 503), the server stops
   accepting (the listeners close), idle keep-alive connections close;
2. requests in progress get ``grace_s`` to finish (responses say ``connection: close``);
3. at the deadline ``on_deadline()`` is called once (the gateway ends every open
   stream with an error event in its caller's dialect) and connections get
   ``interrupt_flush_s`` more to write those last bytes; what remains is cancelled, and
   :attr:`HttpServer.drained` is set;
4. the lifespan shutdown runs (the gateway flushes its ledger and cache writes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import trio

from trioproxy.httpd.conn import Connection
from trioproxy.httpd.lifespan import Lifespan
from trioproxy.httpd.limits import HttpLimits
from trioproxy.httpd.listen import BatchListener

log = logging.getLogger("trioproxy.httpd")

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]
Refuse = Callable[[str | None, str | None, int, str], tuple[Headers, bytes]]
"""``(method or None, path or None, status, message) -> (headers, JSON body)`` for a refusal
the server makes itself (a malformed request, a cap, a deadline, an app that failed to
answer): the app's say in it, e.g. its request id among the headers. The server adds the
framing (content type and length, ``connection: close``)."""

INTERRUPT_FLUSH_S = 2.0
"""After the drain deadline: time for the interrupted streams' last events to be written."""


def plain_refusal(
    method: str | None, path: str | None, status: int, message: str
) -> tuple[Headers, bytes]:
    return (), orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})


class HttpServer:
    def __init__(self, app: ASGIApp, limits: HttpLimits, *, refuse: Refuse = plain_refusal) -> None:
        self.app = app
        self.limits = limits
        self.refuse = refuse
        self.connections: set[Connection] = set()
        self.requests = 0
        """Requests whose app call is running."""
        self.draining = False
        self.drained = trio.Event()
        """Set once the drain is over: no connection is left (the lifespan shutdown follows)."""
        self.accepted = 0
        self._empty = trio.Event()

    def statistics(self) -> dict[str, int]:
        return {
            "connections": len(self.connections),
            "requests": self.requests,
            "accepted": self.accepted,
        }

    async def serve(
        self,
        open_listeners: Callable[[], Sequence[trio.abc.Listener[Any]]],
        *,
        shutdown: trio.Event,
        grace_s: float,
        on_drain: Callable[[], None] | None = None,
        on_deadline: Callable[[], None] | None = None,
        interrupt_flush_s: float = INTERRUPT_FLUSH_S,
        lifespan: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as outer:
            life = Lifespan(self.app) if lifespan else None
            if life is not None:
                await outer.start(life.run)
                await life.startup()
            listeners = open_listeners()  # after start-up: never accept what we cannot serve
            async with trio.open_nursery() as conns:
                accepting = trio.CancelScope()

                async def accept(listener: trio.abc.Listener[Any]) -> None:
                    with accepting:
                        while True:
                            for stream in await _accept_ready(listener):
                                conns.start_soon(self._handle, stream)

                for listener in listeners:
                    conns.start_soon(accept, listener)
                task_status.started()
                await shutdown.wait()
                if on_drain is not None:
                    on_drain()
                accepting.cancel()
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                await self._drain(grace_s, on_deadline, interrupt_flush_s)
                conns.cancel_scope.cancel()
            self.drained.set()
            if life is not None:
                await life.shutdown()
            outer.cancel_scope.cancel()

    async def _drain(
        self, grace_s: float, on_deadline: Callable[[], None] | None, flush_s: float
    ) -> None:
        self.draining = True
        log.info("drain: %d connection(s) open, %d request(s) in progress, grace %.1f s",
                 len(self.connections), self.requests, grace_s)  # fmt: skip
        for conn in list(self.connections):
            conn.wake()
        if not self.connections:
            return
        with trio.move_on_after(grace_s):
            await self._empty.wait()
            log.info("drain: every connection closed")
            return
        log.warning("drain: grace over, interrupting %d request(s)", self.requests)
        if on_deadline is not None:
            on_deadline()
        with trio.move_on_after(flush_s):
            await self._empty.wait()

    async def _handle(self, stream: trio.abc.Stream) -> None:
        scheme = "http"
        sock_stream: Any = stream
        if isinstance(stream, trio.SSLStream):
            scheme = "https"
            sock_stream = stream.transport_stream
            try:
                with trio.fail_after(self.limits.header_timeout_s):
                    await stream.do_handshake()
            except (trio.TooSlowError, trio.BrokenResourceError):
                await trio.aclose_forcefully(stream)
                return
        client = local = None
        sock = getattr(sock_stream, "socket", None)
        if sock is not None:
            try:
                client, local = _addr(sock.getpeername()), _addr(sock.getsockname())
            except OSError:  # gone already
                await trio.aclose_forcefully(stream)
                return
        conn = Connection(self, stream, scheme, client, local)
        self.accepted += 1
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            if self.draining and not self.connections:
                self._empty.set()


async def _accept_ready(listener: trio.abc.Listener[Any]) -> list[Any]:
    """Every connection ready on ``listener`` (one wake-up: see ``BatchListener``)."""
    if isinstance(listener, BatchListener):
        return await listener.accept_batch()
    return [await listener.accept()]


def _addr(raw: Any) -> tuple[str, int] | None:
    if isinstance(raw, tuple) and len(raw) >= 2:
        return str(raw[0]), int(raw[1])
    return None


__all__ = ["HttpServer", "Refuse", "plain_refusal"]
