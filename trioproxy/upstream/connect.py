"""Opening one connection to a provider: TCP, an optional proxy tunnel, optional TLS.

TLS is ``trio.SSLStream`` over the TCP (or tunnel) stream with certificate
verification on and SNI set to the provider's host name: the provider's
``ca_file`` when configured, else the certifi bundle (what httpx used before).
A proxy is reached over plain TCP and asked for a ``CONNECT`` tunnel (see
:mod:`.proxy`). No timeout is set here: the pool wraps the whole of
:meth:`Connector.open` in the named connect timeout.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import trio

from trioproxy.core.proxy import ProxyURL, connect_request
from trioproxy.upstream.http1 import H1Connection


class ProxyRefused(Exception):
    """The proxy answered ``CONNECT`` with something other than 2xx."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    prefix: str
    """Path of the base URL, prepended to every request path ('' or '/openai')."""

    @classmethod
    def from_url(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, parts.port or default, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        """The ``host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on (hostname and chain); ``ca_file`` replaces the default trust store."""
    ctx = ssl.create_default_context(cafile=ca_file or certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Connector:
    """Opens :class:`H1Connection` objects to one origin (through a proxy if given)."""

    def __init__(self, origin: Origin, tls: ssl.SSLContext | None, proxy: ProxyURL | None) -> None:
        self.origin = origin
        self.tls = tls
        self.proxy = proxy

    async def open(self) -> H1Connection:
        host, port = (self.proxy.host, self.proxy.port) if self.proxy else (
            self.origin.host, self.origin.port,
        )  # fmt: skip
        tcp = await trio.open_tcp_stream(host, port)
        stream: trio.abc.Stream = tcp
        try:
            if self.proxy is not None:
                await self._tunnel(tcp, self.proxy)
            if self.tls is not None:
                tls = trio.SSLStream(
                    tcp, self.tls, server_hostname=self.origin.host, https_compatible=True
                )
                await tls.do_handshake()
                stream = tls
        except BaseException:
            tcp.socket.close()
            raise
        return H1Connection(stream, tcp.socket)

    async def _tunnel(self, tcp: trio.SocketStream, proxy: ProxyURL) -> None:
        await tcp.send_all(connect_request(self.origin.host, self.origin.port, proxy))
        answer = H1Connection(tcp, tcp.socket)
        await answer.read_head()
        if not 200 <= answer.status < 300:
            raise ProxyRefused(
                f"proxy {proxy.host}:{proxy.port} refused CONNECT to "
                f"{self.origin.host}:{self.origin.port}: HTTP {answer.status}"
            )


__all__ = ["Connector", "Origin", "ProxyRefused", "tls_context"]
