"""A lean HTTP/1.1 server on Trio sockets for the data plane (llhttp via ``httptools``).

``HttpServer`` serves one ASGI app (http + lifespan) on the listeners it is
given; ``listen`` binds them (``SO_REUSEPORT``, optional TLS). See
``server.py`` for the drain contract and ``conn.py`` for a connection's life.

The names below are loaded on first use: ``serve``'s supervisor binds its ports with
``bind.py`` (stdlib only) without importing Trio, httptools or the server.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trioproxy.httpd.bind import PortBusy, open_tcp_socket
    from trioproxy.httpd.limits import HttpLimits
    from trioproxy.httpd.listen import bind_listeners, tls_context
    from trioproxy.httpd.server import HttpServer

_WHERE = {
    "HttpLimits": "trioproxy.httpd.limits",
    "HttpServer": "trioproxy.httpd.server",
    "PortBusy": "trioproxy.httpd.bind",
    "bind_listeners": "trioproxy.httpd.listen",
    "open_tcp_socket": "trioproxy.httpd.bind",
    "tls_context": "trioproxy.httpd.listen",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where), name)
    globals()[name] = value
    return value


__all__ = [
    "HttpLimits",
    "HttpServer",
    "PortBusy",
    "bind_listeners",
    "open_tcp_socket",
    "tls_context",
]
