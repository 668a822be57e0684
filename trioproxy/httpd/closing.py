"""Closing a client connection: bounded, and after a refusal with a linger first, so the
client reads our answer instead of a connection reset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from trioproxy.httpd.limits import RECV_BYTES

LINGER_S = 1.0
"""After refusing a request whose body is still arriving: how long to drain it before
closing, so that the client reads our answer instead of a connection reset."""
CLOSE_TIMEOUT_S = 1.0
"""Bound on a graceful close (a TLS close_notify to a client that does not read)."""


async def close(stream: trio.abc.Stream, *, linger: bool) -> None:
    """Close ``stream`` (shielded, within ``CLOSE_TIMEOUT_S``, else forcefully); with
    ``linger``, half-close and drain it first."""
    with trio.CancelScope(shield=True):
        if linger:
            await _linger(stream)
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            await stream.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(stream)


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close and drain what the client still sends (bounded), so our last
    answer is read rather than lost to a reset."""
    send_eof: Callable[[], Any] | None = getattr(stream, "send_eof", None)
    if send_eof is None:
        return
    with trio.move_on_after(LINGER_S):
        try:
            await send_eof()
            while await stream.receive_some(RECV_BYTES):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass


__all__ = ["CLOSE_TIMEOUT_S", "LINGER_S", "close"]
