"""Every network call to a provider goes through here.

One small seam, :class:`Transport`, opens one upstream HTTP exchange and
yields an :class:`UpstreamResponse` once the status line and headers are in.
:class:`HttpTransport` implements it on Trio sockets: per provider a bounded
keep-alive :class:`~.pool.Pool` of HTTP/1.1 connections (:mod:`.http1`,
responses parsed by httptools), TLS with verification and SNI, an optional
``CONNECT`` proxy (:mod:`.connect`, :mod:`trioproxy.core.proxy`).

Exceptions are mapped here, at the boundary, by type: nothing gets a
connection within the connect timeout, or the connection or tunnel or TLS
handshake fails -> :class:`UpstreamConnectError`; the exchange breaks after
that -> :class:`UpstreamIOError`. Read timeouts are not set here: the attempt
wraps each read in its own named ``trio`` scope (first byte, idle, total), so
a timeout says which budget ran out.

A request is sent again, on another connection, only when *sending* it failed
on a reused keep-alive connection (the provider had closed it): the request never
fully went out, so the provider cannot have acted on it. Once it is sent, a
connection that closes or resets without a response fails the exchange
(:class:`UpstreamIOError`): the provider may have processed (and billed) the
call, so it is not sent twice; the race may try the next target instead. The
pool's :meth:`~.http1.H1Connection.looks_alive` check catches most connections
the provider closed while they were idle, before anything is sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol

import httptools
import trio

from trioproxy.config.model import ProviderConfig
from trioproxy.core.proxy import ProxyPolicy
from trioproxy.providers.base import UpstreamRequest
from trioproxy.upstream.connect import Connector, Origin, ProxyRefused, tls_context
from trioproxy.upstream.http1 import H1Connection, ProtocolError, request_head
from trioproxy.upstream.pool import Pool, PoolTimeout

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an upstream error body we read (to relay its message)."""
DRAIN_S = 1.0
"""After a clean stream end ([DONE] / message_stop), how long we wait for the
body's last bytes (the chunked terminator) so the connection can be reused."""
DRAIN_BYTES = 64 * 1024

_BROKEN = (OSError, trio.BrokenResourceError, ProtocolError, httptools.HttpParserError)
"""What a broken connection raises below this module."""


class UpstreamIOError(Exception):
    """The connection failed or broke while talking to a provider."""


class UpstreamConnectError(UpstreamIOError):
    """No connection could be made (refused, DNS, proxy, TLS, connect timeout)."""


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def receive(self) -> bytes:
        """The next body bytes as they arrive, ``b""`` at the end; raises UpstreamIOError."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (the rest is discarded)."""
        ...


class Transport(Protocol):
    def open(
        self, provider: ProviderConfig, request: UpstreamRequest, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[UpstreamResponse]: ...


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not None and isinstance(exc, trio.BrokenResourceError):
        text += f" ({type(cause).__name__}: {cause})"
    return text


class _Response:
    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: H1Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def receive(self) -> bytes:
        try:
            return await self._conn.receive()
        except _BROKEN as exc:
            raise UpstreamIOError(_describe(exc)) from exc

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while chunk := await self.receive():
            if size < limit:
                parts.append(chunk[: limit - size])
            size += len(chunk)
        return b"".join(parts)

    async def drain(self) -> None:
        """Read what is left of the body (bounded in time and bytes) for keep-alive."""
        size = 0
        with trio.move_on_after(DRAIN_S):
            while size <= DRAIN_BYTES and (chunk := await self._conn.receive()):
                size += len(chunk)


class HttpTransport:
    """One connection pool per provider; see the module doc.

    The pools of ``providers``, TLS contexts included (loading a CA bundle takes
    milliseconds of blocking file reading and parsing), are built here, at start-up
    or in the reload thread, never by a request on the event loop. A provider not in
    ``providers`` gets its pool on first use (tests).
    """

    def __init__(
        self, providers: Mapping[str, ProviderConfig], env: Mapping[str, str] | None = None
    ) -> None:
        self._proxies = ProxyPolicy.from_env(os.environ if env is None else env)
        self._pools: dict[str, Pool] = {p.name: self._new_pool(p) for p in providers.values()}

    def _new_pool(self, provider: ProviderConfig) -> Pool:
        origin = Origin.from_url(provider.base_url)
        tls = tls_context(provider.ca_file) if origin.scheme == "https" else None
        proxy = self._proxies.for_target(origin.scheme, origin.host, origin.port, provider.proxy)
        connector = Connector(origin, tls, proxy)
        return Pool(connector, provider.max_connections, provider.pool_idle_s)

    def pool(self, provider: ProviderConfig) -> Pool:
        pool = self._pools.get(provider.name)
        if pool is None:
            pool = self._pools[provider.name] = self._new_pool(provider)
        return pool

    async def _connect(self, pool: Pool, connect_timeout: float) -> tuple[H1Connection, bool]:
        try:
            return await pool.acquire(connect_timeout)
        except (PoolTimeout, ProxyRefused) as exc:
            raise UpstreamConnectError(str(exc)) from exc
        except (*_BROKEN, ValueError) as exc:  # ValueError: e.g. an IDNA host name
            raise UpstreamConnectError(_describe(exc)) from exc

    def open(
        self, provider: ProviderConfig, request: UpstreamRequest, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        return _Exchange(self, provider, request, connect_timeout)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await trio.lowlevel.checkpoint()


class _Exchange(AbstractAsyncContextManager[UpstreamResponse]):
    """One exchange of :meth:`HttpTransport.open`, as ``async with``: entering sends the
    request and waits for the response's head; leaving hands the connection back to the
    pool (its body drained for keep-alive), or closes it when the block raised. A plain
    class, not a generator context manager: every upstream call enters one."""

    __slots__ = ("_conn", "_connect_timeout", "_pool", "_provider", "_request", "_response",
                 "_transport")  # fmt: skip

    def __init__(
        self, transport: HttpTransport, provider: ProviderConfig, request: UpstreamRequest,
        connect_timeout: float,
    ) -> None:  # fmt: skip
        self._transport, self._provider, self._request = transport, provider, request
        self._connect_timeout = connect_timeout

    async def __aenter__(self) -> UpstreamResponse:
        pool = self._pool = self._transport.pool(self._provider)
        request = self._request
        origin = pool.connector.origin
        head = request_head(
            "POST", origin.prefix + request.path, origin.authority, request.headers,
            len(request.body),
        )  # fmt: skip
        while True:
            conn, reused = await self._transport._connect(pool, self._connect_timeout)
            try:
                await conn.send_request(head, request.body)
            except _BROKEN as exc:
                pool.discard(conn)
                if reused:
                    continue  # a stale keep-alive connection: the request never fully left
                raise UpstreamIOError(_describe(exc)) from exc
            except BaseException:
                pool.discard(conn)
                raise
            break
        try:
            await conn.read_head()
        except _BROKEN as exc:  # sent: the provider may have acted on it; never send it again
            pool.discard(conn)
            raise UpstreamIOError(_describe(exc)) from exc
        except BaseException:
            pool.discard(conn)
            raise
        self._conn = conn
        response = self._response = _Response(conn)
        return response

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        pool, conn = self._pool, self._conn
        if exc_type is not None:
            pool.discard(conn)
            return
        if not conn.complete:
            try:
                await self._response.drain()
            except _BROKEN:
                pass  # not reusable: release() below closes it
            except BaseException:
                pool.discard(conn)
                raise
        pool.release(conn)


__all__ = [
    "ERROR_BODY_LIMIT",
    "HttpTransport",
    "Transport",
    "UpstreamConnectError",
    "UpstreamIOError",
    "UpstreamResponse",
]
