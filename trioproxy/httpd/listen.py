"""Listening sockets for the data plane: ``SO_REUSEPORT`` and optional TLS."""

from __future__ import annotations

import errno
import logging
import socket
import ssl

import trio

from trioproxy.httpd.bind import PortBusy, open_tcp_socket

log = logging.getLogger("trioproxy.httpd")

BACKLOG = 4096
ACCEPT_BATCH = 256
"""Connections taken from the kernel's accept queue per wake-up of the accept task."""
ACCEPT_CAPACITY_ERRNOS = frozenset(
    getattr(errno, n) for n in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS") if hasattr(errno, n)
)
_IGNORED = "ECONNABORTED EPROTO EPERM ENETDOWN ENOPROTOOPT EHOSTDOWN ENONET EHOSTUNREACH"
IGNORED_ACCEPT_ERRNOS = frozenset(
    getattr(errno, n) for n in (*_IGNORED.split(), "EOPNOTSUPP", "ENETUNREACH") if hasattr(errno, n)
)
"""Errors of one connection (as trio's ``SocketListener`` ignores them): take the next."""
CAPACITY_SLEEP_S = 0.1
"""Pause of the accept loop when the process is out of file descriptors or memory."""


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class BatchListener(trio.abc.Listener[trio.abc.Stream]):
    """A listening TCP socket that hands over every connection the kernel has ready.

    ``trio.SocketListener.accept`` takes one connection per wake-up, and the accept task
    then waits for the next scheduler batch; with a thousand streams relaying, a batch
    takes tens of milliseconds and a burst of new connections waits in the kernel's
    accept queue for seconds (``loadtest/ttft_tail.py`` measured ~20 accepts/s). Here one
    wake-up takes up to ``ACCEPT_BATCH`` connections. TLS connections are wrapped as
    ``trio.SSLListener`` does (the handshake is the connection handler's).
    """

    def __init__(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        self._tsock = trio.socket.from_stdlib_socket(sock)  # makes it non-blocking
        self._sock = sock
        self._tls = tls

    def _wrap(self, sock: socket.socket) -> trio.abc.Stream:
        stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        if self._tls is not None:
            stream = trio.SSLStream(stream, self._tls, server_side=True, https_compatible=True)
        return stream

    async def accept_batch(self, limit: int = ACCEPT_BATCH) -> list[trio.abc.Stream]:
        """The connections ready now (at least one, at most ``limit``); waits for one.

        Raises ``trio.ClosedResourceError`` once the listener is closed."""
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            out: list[trio.abc.Stream] = []
            capacity = False
            while len(out) < limit:
                if self._sock.fileno() < 0:
                    raise trio.ClosedResourceError
                try:
                    sock, _ = self._sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                        raise trio.ClosedResourceError from None
                    if exc.errno in IGNORED_ACCEPT_ERRNOS:
                        continue
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    capacity = True
                    log.error("accept: %s; pausing %.1f s", exc, CAPACITY_SLEEP_S)
                    break
                out.append(self._wrap(sock))
            if out:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return out
            if capacity:
                await trio.sleep(CAPACITY_SLEEP_S)
            else:
                await trio.lowlevel.wait_readable(self._sock)

    async def accept(self) -> trio.abc.Stream:
        return (await self.accept_batch(1))[0]

    async def aclose(self) -> None:
        self._tsock.close()
        await trio.lowlevel.checkpoint()


def bind_listeners(sock: socket.socket, tls: ssl.SSLContext | None = None) -> list[BatchListener]:
    """Start listening on ``sock`` (bound by ``open_tcp_socket``)."""
    sock.listen(BACKLOG)
    return [BatchListener(sock, tls)]


__all__ = [
    "ACCEPT_BATCH",
    "BACKLOG",
    "BatchListener",
    "PortBusy",
    "bind_listeners",
    "open_tcp_socket",
    "tls_context",
]
