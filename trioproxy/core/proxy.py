"""Which HTTP proxy, if any, carries a connection to a provider (pure).

Supported: an ``http://[user:password@]host[:port]`` proxy, used through an
HTTP ``CONNECT`` tunnel for both ``https://`` and ``http://`` providers (TLS to
the provider runs inside the tunnel, end to end). Not supported: ``https://``
proxies (TLS to the proxy itself), SOCKS, PAC files, absolute-form requests.

The proxy comes from the provider's ``proxy`` config, else from the
environment, read once at start-up as curl reads it: ``https_proxy`` /
``HTTPS_PROXY`` for https providers, ``http_proxy`` / ``HTTP_PROXY`` for http
ones (lower case wins), ``ALL_PROXY`` for both, and ``no_proxy`` / ``NO_PROXY``:
comma-separated entries, each ``*`` (everything), a host name that matches
itself and its subdomains (a leading ``.`` is ignored), an IP address, or a
CIDR block, any of them with an optional ``:port``. As in Go's net/http,
loopback hosts (``localhost``, 127.0.0.0/8, ::1) never take a proxy from the
environment (a proxy set in a provider's config is used as configured).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DIRECT = "none"
"""The ``proxy`` config value that disables proxies for a provider."""
FROM_ENV = "env"
"""The default ``proxy`` config value: take the proxy from the environment."""


@dataclass(frozen=True, slots=True)
class ProxyURL:
    host: str
    port: int
    authorization: str | None = None
    """``Basic ...`` from the URL's user info, sent as ``proxy-authorization``."""


def parse_proxy_url(url: str) -> ProxyURL:
    """``http://[user:pass@]host[:port]`` (scheme optional); ``ValueError`` otherwise."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// proxies are supported, got {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"proxy URL has no host: {url!r}")
    auth = None
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(raw).decode("ascii")
    return ProxyURL(parts.hostname, parts.port or 80, auth)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy_match(entry: str, host: str, port: int) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    want_port: int | None = None
    if entry.startswith("["):  # [v6]:port
        addr, _, rest = entry[1:].partition("]")
        entry = addr
        if rest.startswith(":") and rest[1:].isdigit():
            want_port = int(rest[1:])
    elif entry.count(":") == 1:
        name, _, p = entry.partition(":")
        if p.isdigit():
            entry, want_port = name, int(p)
    if want_port is not None and want_port != port:
        return False
    host = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        try:
            return ip in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    entry = entry.lstrip(".")
    return host == entry or host.endswith("." + entry)


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    https: str | None = None
    http: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProxyPolicy:
        def first(*names: str) -> str | None:
            for name in names:
                if value := env.get(name, "").strip():
                    return value
            return None

        every = first("all_proxy", "ALL_PROXY")
        no = first("no_proxy", "NO_PROXY") or ""
        return cls(
            https=first("https_proxy", "HTTPS_PROXY") or every,
            http=first("http_proxy", "HTTP_PROXY") or every,
            no_proxy=tuple(e for e in no.split(",") if e.strip()),
        )

    def for_target(self, scheme: str, host: str, port: int, configured: str) -> ProxyURL | None:
        """The proxy for one provider origin; ``configured`` is its ``proxy`` setting."""
        if configured == DIRECT:
            return None
        if configured != FROM_ENV:
            return parse_proxy_url(configured)
        url = self.https if scheme == "https" else self.http
        if url is None or _is_loopback(host):
            return None
        if any(_no_proxy_match(e, host, port) for e in self.no_proxy):
            return None
        return parse_proxy_url(url)


def connect_request(host: str, port: int, proxy: ProxyURL) -> bytes:
    """The ``CONNECT`` request that opens a tunnel to ``host:port``."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


__all__ = [
    "DIRECT",
    "FROM_ENV",
    "ProxyPolicy",
    "ProxyURL",
    "connect_request",
    "parse_proxy_url",
]
