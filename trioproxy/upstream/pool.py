"""A bounded pool of keep-alive connections to one provider.

At most ``max_connections`` connections exist at once (busy and idle
together); a caller that finds none free waits, within its connect timeout,
for one to come back. Idle connections are reused most-recent first, checked
without blocking before reuse (:meth:`H1Connection.looks_alive`), and closed
once idle longer than ``idle_s`` (swept on every acquire and release, oldest
first). Connections that did not end a clean keep-alive exchange are closed,
never reused.
"""

from __future__ import annotations

from collections import deque

import trio

from trioproxy.upstream.connect import Connector
from trioproxy.upstream.http1 import H1Connection


class PoolTimeout(Exception):
    """No connection could be had within the connect timeout."""


class Pool:
    def __init__(self, connector: Connector, max_connections: int, idle_s: float) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.connector = connector
        self.max_connections = max_connections
        self.idle_s = idle_s
        self._idle: deque[H1Connection] = deque()
        self._total = 0
        self._waiters = trio.lowlevel.ParkingLot()
        self.opened = 0
        """Connections opened since start (for tests and metrics)."""

    @property
    def total(self) -> int:
        """Connections that exist now, busy or idle."""
        return self._total

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _sweep(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0].idle_since > self.idle_s:
            self._drop(idle.popleft())

    def _drop(self, conn: H1Connection) -> None:
        conn.close()
        self._total -= 1
        self._waiters.unpark()

    async def acquire(self, connect_timeout: float) -> tuple[H1Connection, bool]:
        """A connection and whether it was reused; raises :class:`PoolTimeout` or what
        opening a connection raises (``OSError``, ``trio.BrokenResourceError``...).

        Reusing an idle connection (the usual case) arms no timer and does not yield:
        a cancellation is delivered before a connection is taken, and past that point
        nothing waits, so a taken connection always reaches the caller (who releases or
        discards it); the caller's next step (the request's send and read) yields."""
        if (conn := await self._reuse()) is not None:
            return conn, True
        with trio.move_on_after(connect_timeout) as scope:
            while True:
                if self._total < self.max_connections:
                    self._total += 1
                    try:
                        conn = await self.connector.open()
                    except BaseException:
                        self._total -= 1
                        self._waiters.unpark()
                        raise
                    self.opened += 1
                    return conn, False
                await self._waiters.park()
                try:
                    conn = await self._reuse()
                except BaseException:  # woken for a connection, then cancelled (caller gone,
                    self._waiters.unpark()  # its deadline): the next waiter's turn, not a hang
                    raise
                if conn is not None:  # one came back
                    return conn, True
        assert scope.cancelled_caught
        raise PoolTimeout(f"connect timeout: {connect_timeout:g}s")

    async def _reuse(self) -> H1Connection | None:
        self._sweep(trio.current_time())
        if not self._idle:
            return None
        await trio.lowlevel.checkpoint_if_cancelled()  # does not yield unless cancelled
        while self._idle:
            conn = self._idle.pop()
            if conn.looks_alive():
                return conn
            self._drop(conn)
        return None

    def release(self, conn: H1Connection) -> None:
        """Give a connection back: kept if its exchange ended cleanly, closed otherwise."""
        if not conn.reusable:
            self._drop(conn)
            return
        now = trio.current_time()
        conn.idle_since = now
        self._idle.append(conn)
        self._sweep(now)
        self._waiters.unpark()

    def discard(self, conn: H1Connection) -> None:
        """Close a connection that broke or was abandoned mid-exchange."""
        self._drop(conn)

    def close(self) -> None:
        while self._idle:
            self._drop(self._idle.pop())


__all__ = ["Pool", "PoolTimeout"]
