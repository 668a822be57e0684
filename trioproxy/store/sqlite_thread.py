"""One SQLite connection used from Trio through worker threads, one call at a time.

A call runs in ``trio.to_thread`` behind a ``CapacityLimiter(1)`` and, inside the thread, a
lock that :meth:`SerialConnection.close` takes too: a call whose caller gave up (cancelled,
its thread abandoned) still runs on the connection, and closing waits for it (closing a
connection under a running statement crashed the process: a segfault seen in a test run on a
busy box). The connection is opened by the first call, in its thread; after :meth:`close`,
calls raise :class:`sqlite3.ProgrammingError`. Used by the admin store's engine and the
cache file's read and write connections.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class SerialConnection:
    def __init__(self, opener: Callable[[], sqlite3.Connection]) -> None:
        """``opener`` gives the connection on first use (blocking, in a worker thread; what
        it raises, that call raises, and the next call tries again)."""
        self._opener = opener
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)
        self._using = threading.Lock()
        """Held by the thread running a call, and by :meth:`close`."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in a worker thread, after the calls before it."""
        return await trio.to_thread.run_sync(
            self.call, fn, limiter=self._limiter, abandon_on_cancel=True
        )

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on this thread (blocking: a worker thread, or before the loop)."""
        with self._using:
            if self._closed:
                raise sqlite3.ProgrammingError("connection closed")
            if self._conn is None:
                self._conn = self._opener()
            return fn(self._conn)

    def close(self) -> None:
        """Close once no call runs on the connection (blocking: run it in a thread)."""
        with self._using:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


__all__ = ["SerialConnection"]
