"""A lean HTTP/1.1 server on Trio sockets for the data plane (llhttp via ``httptools``).

``HttpServer`` serves one ASGI app (http + lifespan) on the listeners it is
given; ``listen`` binds them (``SO_REUSEPORT``, optional TLS). See
``server.py`` for the drain contract and ``conn.py`` for a connection's life.
"""

from trioproxy.httpd.limits import HttpLimits
from trioproxy.httpd.listen import PortBusy, bind_listeners, open_tcp_socket, tls_context
from trioproxy.httpd.server import HttpServer

__all__ = [
    "HttpLimits",
    "HttpServer",
    "PortBusy",
    "bind_listeners",
    "open_tcp_socket",
    "tls_context",
]
