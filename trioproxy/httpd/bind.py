"""The data and admin ports' sockets, bound but not listening (stdlib only: ``serve``'s
supervisor binds them without importing Trio or the server, ``server/runner.py``)."""

from __future__ import annotations

import socket


class PortBusy(OSError):
    """The address is in use by a process we cannot share it with."""


def open_tcp_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound (not yet listening) TCP socket; ``PortBusy`` when the address is taken.

    With ``reuse_port`` every worker binds its own socket on the same port and the
    kernel spreads connections across them (Linux ``SO_REUSEPORT``).
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            raise PortBusy(exc.errno, f"cannot bind {host}:{port}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["PortBusy", "open_tcp_socket"]
