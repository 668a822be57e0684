"""``cache.sqlite3`` in ``state_dir``: the embedded response cache that one host's worker
processes share and that outlives a restart (used when no ``storage.redis_url`` is set).

Two tables: ``entries`` (the exact cache and the semantic cache's records:
:mod:`.exact_sqlite`) and ``vectors`` (the prompts' embeddings every worker's hnswlib index
is built from and tails: :mod:`.vector_shared`). Triggers keep ``entry_totals`` (entries,
bytes) exact under every writer, so a bound is checked without counting the table.

:class:`CacheFile` is one process's connection, opened with
:func:`~trioproxy.store.sqlite_file.open_wal` (WAL: readers never wait for a writer) on first
use, in a worker thread; every call runs in ``trio.to_thread`` behind a
``CapacityLimiter(1)`` per connection (one statement at a time on it; closing waits for a call
still running, as :mod:`trioproxy.admin.sqlite_engine` does). Reads and writes have a
connection each: a write waiting for another process's lock never holds up a lookup (in WAL
a read does not wait for a writer). A cache is an optimisation, so a
call that fails (the file locked past :data:`BUSY_TIMEOUT_S`, corrupt, unwritable) answers
its caller's default (a miss, a skipped write), is counted in :attr:`CacheFile.errors` and
logged at most once per :data:`LOG_EVERY_S`; it never fails a request. A file that cannot be
opened is tried again after :data:`REOPEN_AFTER_S`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from trioproxy.store.sqlite_file import open_wal

T = TypeVar("T")
log = logging.getLogger(__name__)

FILE_NAME = "cache.sqlite3"
BUSY_TIMEOUT_S = 0.25
"""How long a call waits for another process's lock before it fails. Below the lookup's own
bound (``pipeline.caching.LOOKUP_TIMEOUT_S``, 0.5 s), so a file held by someone else answers a
miss inside it; a write here holds the lock ~0.1 ms, so a wait this long means the file is
held, not contended."""
LOG_EVERY_S = 60.0
"""At most one warning per this many seconds while calls fail (each is counted)."""
REOPEN_AFTER_S = 5.0
"""After a failed open, calls answer their default at once until this has passed."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entries_expiry ON entries(expires_at);
CREATE TABLE IF NOT EXISTS entry_totals(
    id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO entry_totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_in AFTER INSERT ON entries BEGIN
    UPDATE entry_totals SET n = n + 1, bytes = bytes + new.size WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS entries_out AFTER DELETE ON entries BEGIN
    UPDATE entry_totals SET n = n - 1, bytes = bytes - old.size WHERE id = 0; END;
CREATE TABLE IF NOT EXISTS vectors(
    id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, entry_id TEXT NOT NULL,
    prompt TEXT NOT NULL, vec BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS vectors_entry ON vectors(namespace, entry_id);
CREATE INDEX IF NOT EXISTS vectors_expiry ON vectors(expires_at);
"""
"""``vectors.id`` is AUTOINCREMENT: an id is never reused, so a worker that has read up to id
N never misses a row added later (SQLite has one writer at a time: ids commit in order)."""

_MADE = "SELECT 1 FROM sqlite_master WHERE name = 'vectors_expiry'"
"""The schema's last object exists."""


def open_cache_file(path: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection with the schema in place (blocking: a thread, or before the loop runs)."""
    conn = open_wal(path, busy_timeout_s=busy_timeout_s)
    try:  # a file with the schema is opened without a write (its lock may be held)
        if conn.execute(_MADE).fetchone() is None:
            conn.executescript(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def prefix_range(prefix: str) -> tuple[str, str]:
    """``(low, high)``: a key starts with ``prefix`` iff ``low <= key < high`` (an index range,
    not a scan; ``prefix`` is not empty)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


class _Slot:
    """One connection, opened on first use; the limiter and lock its calls run under."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.limiter = trio.CapacityLimiter(1)
        self.using = threading.Lock()
        """Held by the thread running a call, and by :meth:`CacheFile.close`."""


class CacheFile:
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._reads, self._writes = _Slot(), _Slot()
        self._closed = False
        self._retry_at = float("-inf")
        self._logged_at = float("-inf")
        self.errors = 0
        """Calls that failed (answered their default)."""

    async def read(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(connection)`` (no writes) in a worker thread, or ``default`` when it fails."""
        return await self._run(self._reads, fn, default)

    async def write(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(connection)`` in a worker thread, or ``default`` when the file fails."""
        return await self._run(self._writes, fn, default)

    async def _run(self, slot: _Slot, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        try:
            return await trio.to_thread.run_sync(
                self._call, slot, fn, limiter=slot.limiter, abandon_on_cancel=True
            )
        except sqlite3.Error as exc:
            self.failed(exc)
            return default

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = self._clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "cache file %s failed (%d calls so far answered as misses or skipped "
                "writes): %r", self.path, self.errors, exc,
            )  # fmt: skip

    def _call(self, slot: _Slot, fn: Callable[[sqlite3.Connection], T]) -> T:
        with slot.using:
            if slot.conn is None:
                slot.conn = self._open()
            return fn(slot.conn)

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("cache file closed")
        if self._clock() < self._retry_at:
            raise sqlite3.OperationalError("cache file unavailable (open failed lately)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open_cache_file(str(self.path), busy_timeout_s=self._busy_timeout_s)
        except (sqlite3.Error, OSError) as exc:
            self._retry_at = self._clock() + REOPEN_AFTER_S
            raise sqlite3.OperationalError(f"cannot open {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close once no call runs (blocking: run it in a thread); later calls fail."""
        self._closed = True
        for slot in (self._reads, self._writes):
            with slot.using:
                if slot.conn is not None:
                    slot.conn.close()
                    slot.conn = None


__all__ = [
    "BUSY_TIMEOUT_S",
    "FILE_NAME",
    "LOG_EVERY_S",
    "REOPEN_AFTER_S",
    "SCHEMA",
    "CacheFile",
    "open_cache_file",
    "prefix_range",
]
