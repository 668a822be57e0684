"""Every network call to a provider goes through here.

One small seam, :class:`Transport`, opens one upstream HTTP exchange and
yields an :class:`UpstreamResponse` once the status line and headers are in.
:class:`HttpTransport` implements it on httpx2 (same API as httpx, with a pool
that holds up at many connections), one client and connection pool per provider. Transport exceptions are mapped here, by type,
to :class:`UpstreamIOError` / :class:`UpstreamConnectError`; nothing above this
module sees an httpx type. Read timeouts are not set on the client: the
attempt wraps each read in its own named ``trio`` scope (first byte, idle,
total), so a timeout says which budget ran out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx2

from trioproxy.config.model import ProviderConfig
from trioproxy.providers.base import UpstreamRequest

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an upstream error body we read (to relay its message)."""


class UpstreamIOError(Exception):
    """The connection failed or broke while talking to a provider."""


class UpstreamConnectError(UpstreamIOError):
    """No connection could be made (refused, DNS, TLS, connect timeout)."""


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises UpstreamIOError if the stream breaks."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (the rest is discarded)."""
        ...


class Transport(Protocol):
    def open(
        self, provider: ProviderConfig, request: UpstreamRequest, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[UpstreamResponse]: ...


@dataclass(slots=True)
class _HttpxResponse:
    status: int
    headers: Mapping[str, str]
    _response: httpx2.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx2.TransportError as exc:
            raise UpstreamIOError(f"{type(exc).__name__}: {exc}") from exc

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            if size < limit:
                parts.append(chunk[: limit - size])
            size += len(chunk)
        return b"".join(parts)


class HttpTransport:
    """httpx2 clients, one per provider, created lazily and closed by :meth:`aclose`."""

    def __init__(self, providers: Mapping[str, ProviderConfig]) -> None:
        self._providers = providers
        self._clients: dict[str, httpx2.AsyncClient] = {}

    def _client(self, provider: ProviderConfig) -> httpx2.AsyncClient:
        client = self._clients.get(provider.name)
        if client is None:
            limits = httpx2.Limits(
                max_connections=provider.max_connections,
                max_keepalive_connections=provider.max_connections,
                keepalive_expiry=30.0,
            )
            client = httpx2.AsyncClient(
                base_url=provider.base_url, limits=limits, timeout=None, trust_env=False
            )
            self._clients[provider.name] = client
        return client

    @asynccontextmanager
    async def open(
        self, provider: ProviderConfig, request: UpstreamRequest, *, connect_timeout: float
    ) -> AsyncIterator[UpstreamResponse]:
        client = self._client(provider)
        req = client.build_request(
            "POST",
            request.path,
            content=request.body,
            headers=list(request.headers),
            timeout=httpx2.Timeout(None, connect=connect_timeout, pool=connect_timeout),
        )
        try:
            response = await client.send(req, stream=True)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        except httpx2.TransportError as exc:
            raise UpstreamIOError(f"{type(exc).__name__}: {exc}") from exc
        try:
            yield _HttpxResponse(response.status_code, response.headers, response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


__all__ = [
    "ERROR_BODY_LIMIT",
    "HttpTransport",
    "Transport",
    "UpstreamConnectError",
    "UpstreamIOError",
    "UpstreamResponse",
]
