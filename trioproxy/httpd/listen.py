"""Listening sockets for the data plane: ``SO_REUSEPORT`` and optional TLS."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import trio

BACKLOG = 4096


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


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def bind_listeners(
    sock: socket.socket, tls: ssl.SSLContext | None = None
) -> list[trio.abc.Listener[Any]]:
    """Start listening on ``sock`` (bound by ``open_tcp_socket``) as trio listeners."""
    sock.listen(BACKLOG)
    tsock = trio.socket.from_stdlib_socket(sock)
    listener: trio.abc.Listener[Any] = trio.SocketListener(tsock)
    if tls is not None:
        listener = trio.SSLListener(listener, tls, https_compatible=True)
    return [listener]


__all__ = ["BACKLOG", "PortBusy", "bind_listeners", "open_tcp_socket", "tls_context"]
