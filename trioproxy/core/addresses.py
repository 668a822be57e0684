"""An IP address as a header or a peer writes it (pure): the admin port's client address
(:mod:`trioproxy.edge.client_address`) and the throttle's subjects
(:mod:`trioproxy.admin.throttle`) read addresses with it."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(raw: str) -> IPAddress | None:
    """An address as a header or a peer writes it: ``192.0.2.1``, ``192.0.2.1:4711``,
    ``2001:db8::1``, ``[2001:db8::1]:4711``, quoted or not; an IPv4-mapped IPv6 address is
    its IPv4 address. None for anything else (``unknown``, ``_hidden``, garbage)."""
    text = raw.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


__all__ = ["IPAddress", "parse_ip"]
