"""One ``trioproxy serve`` per port: the ports it serves, claimed for its lifetime.

The workers of ``--workers N`` share a port through ``SO_REUSEPORT``, and Linux lets any
process of the same user join such a port: a second ``trioproxy serve`` started on a port a
first one serves would bind it too, and the kernel would spread connections over two gateways
(other keys and config, one state directory written by both). So ``serve`` holds an abstract
Unix socket named after each port for as long as it runs; a second ``serve`` on one of those
ports cannot bind the name and stops like on any busy port (exit status 2). Abstract names
belong to the network namespace, as ports do, need no file (``PrivateTmp``, a read-only file
system) and vanish with the process, even after SIGKILL. The name holds the port number only:
one trioproxy per port number on a host, whichever addresses it listens on.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterable

from trioproxy.httpd.bind import PortBusy


def claim_name(port: int) -> str:
    return f"\0trioproxy/tcp/{port}"


def claim_ports(addresses: Iterable[tuple[str, int]]) -> list[socket.socket]:
    """Hold each (host, port)'s claim (keep the sockets open); ``PortBusy`` if another serve
    holds one. No claim off Linux (no abstract names there; the bind decides alone)."""
    if not sys.platform.startswith("linux"):
        return []
    held: list[socket.socket] = []
    claimed: set[int] = set()
    try:
        for host, port in addresses:
            if port in claimed:
                continue
            claimed.add(port)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(sock)
            try:
                sock.bind(claim_name(port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise PortBusy(
                    exc.errno, f"cannot bind {host}:{port}: another trioproxy serves port {port}"
                ) from None
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


__all__ = ["claim_name", "claim_ports"]
