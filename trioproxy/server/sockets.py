"""The data and admin sockets of ``serve``, bound (``SO_REUSEPORT``) but not listening: the
supervisor binds them before its banner (``runner.py``) and keeps them while its children
restart; each worker binds its own (``worker.py``). No gateway is imported here."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

from trioproxy.httpd.bind import open_tcp_socket


class AdminAddress(Protocol):
    """Where the admin port is configured: ``ServerConfig``, or ``serve``'s ``ServePlan``."""

    @property
    def admin_host(self) -> str: ...

    @property
    def admin_port(self) -> int: ...


@dataclass
class Bound:
    """The sockets of one worker, bound (not yet listening)."""

    data: socket.socket
    admin: socket.socket | None

    @property
    def port(self) -> int:
        return int(self.data.getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        return None if self.admin is None else int(self.admin.getsockname()[1])

    def close(self) -> None:
        self.data.close()
        if self.admin is not None:
            self.admin.close()


def bind(
    server: AdminAddress, host: str, port: int, *, admin: bool = True,
    admin_port: int | None = None,
) -> Bound:  # fmt: skip
    """Bind the data and admin ports with ``SO_REUSEPORT``; ``PortBusy`` if taken.
    ``admin_port`` overrides ``server.admin_port`` (``serve --admin-port``)."""
    data = open_tcp_socket(host, port, reuse_port=True)
    if not admin:
        return Bound(data, None)
    port_ = server.admin_port if admin_port is None else admin_port
    try:
        return Bound(data, open_tcp_socket(server.admin_host, port_, reuse_port=True))
    except BaseException:
        data.close()
        raise


__all__ = ["Bound", "bind"]
