"""The admin port's client address, behind a reverse proxy too (pure).

The address a request came from is its TCP peer, unless that peer is one of
``dashboard.trusted_proxies`` (addresses or CIDR ranges; none by default): then the client
is named by the header the proxy adds, ``X-Forwarded-For`` (or, when the request has none,
``Forwarded``'s ``for=``, RFC 7239). The header is read from the right: the hops a trusted
proxy appended are passed over, and the first address that is not a trusted proxy's is the
client (the left part is whatever the client sent, and it can forge it). A hop that is no
address ends the walk at the last trusted one: the proxy's own address is used, as without
the header.

The proxy must append to (or set) ``X-Forwarded-For``: nginx
``proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;``, Caddy and HAProxy's
``option forwardfor`` do. One that writes only ``Forwarded`` must drop a client's
``X-Forwarded-For``, which is read first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from trioproxy.core.addresses import IPAddress, parse_ip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """``dashboard.trusted_proxies`` as networks (the config checked them)."""
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def _forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for=`` of each element of ``Forwarded`` headers, in order."""
    out: list[str] = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                key, _, val = pair.strip().partition("=")
                if key.lower() == "for":
                    out.append(val)
    return out


def client_address(
    peer: str | None, headers: Iterable[tuple[bytes, bytes]], trusted: Sequence[IPNetwork]
) -> str:
    """The client's address (see the module): ``peer``, or the one a trusted proxy names."""
    peer_ip = parse_ip(peer) if peer else None
    current = str(peer_ip) if peer_ip is not None else (peer or "unknown")
    if peer_ip is None or not trusted or not _trusted(peer_ip, trusted):
        return current
    xff: list[str] = []
    fwd: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            xff.append(value.decode("latin-1"))
        elif lower == b"forwarded":
            fwd.append(value.decode("latin-1"))
    hops = [h for v in xff for h in v.split(",")] if xff else _forwarded_for(fwd)
    for hop in reversed(hops):
        ip = parse_ip(hop)
        if ip is None:
            break  # not an address: the last trusted hop is the client as far as we know
        current = str(ip)
        if not _trusted(ip, trusted):
            break
    return current


def _trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)


def scope_client(scope: Mapping[str, Any], trusted: tuple[str, ...]) -> str:
    """:func:`client_address` of an ASGI request, ``trusted`` as the config writes it."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    return client_address(peer, scope.get("headers", ()), networks(trusted))


__all__ = ["client_address", "networks", "scope_client"]
