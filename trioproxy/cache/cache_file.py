"""``cache.sqlite3`` in ``state_dir``: the embedded response cache that one host's worker
processes share and that outlives a restart (used when no ``storage.redis_url`` is set).

Two tables: ``entries`` (the exact cache and the semantic cache's records:
:mod:`.exact_sqlite`) and ``vectors`` (the prompts' embeddings every worker's hnswlib index
is built from and tails: :mod:`.vector_shared`). Triggers keep ``entry_totals`` (entries,
bytes) exact under every writer, so a bound is checked without counting the table.

:class:`CacheFile` is one process's connection, opened with
:func:`~trioproxy.store.sqlite_file.open_wal` (WAL: readers never wait for a writer) on first
use, in a worker thread; every call runs in ``trio.to_thread``, one at a time per connection,
closing included (:class:`~trioproxy.store.sqlite_thread.SerialConnection`). Reads and writes have a
connection each: a write waiting for another process's lock never holds up a lookup (in WAL
a read does not wait for a writer).

Stores are written behind: :meth:`CacheFile.defer` queues a write (at most
:data:`MAX_PENDING`; beyond, it is skipped and counted) and :meth:`CacheFile.run` (the
``cache-file`` service) writes everything queued in one ``BEGIN IMMEDIATE`` transaction per
thread hop, so a miss's three writes (its entry, its semantic record, its vector) cost one
hop and one commit, and fewer still under load. A batch that fails is lost as a whole (a
cache: those answers are asked upstream again). At shutdown what is queued is written within
:data:`CLOSE_TIMEOUT_S`, then the file is closed. A cache is an optimisation, so a
call that fails (the file locked past :data:`BUSY_TIMEOUT_S`, corrupt, unwritable) answers
its caller's default (a miss, a skipped write), is counted in :attr:`CacheFile.errors` and
logged at most once per :data:`LOG_EVERY_S`; it never fails a request. A file that cannot be
opened is tried again after :data:`REOPEN_AFTER_S`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import trio

from trioproxy.store.sqlite_file import immediate, open_wal
from trioproxy.store.sqlite_thread import SerialConnection

T = TypeVar("T")
log = logging.getLogger(__name__)

FILE_NAME = "cache.sqlite3"
MAX_ROWS = 100_000
"""Most semantic prompts the file keeps unless ``storage.semantic_max_prompts`` says otherwise
(a row: the vector, 1.5 KB at 384 floats, and its prompt)."""
BUSY_TIMEOUT_S = 0.25
"""How long a call waits for another process's lock before it fails. Below the lookup's own
bound (``pipeline.caching.LOOKUP_TIMEOUT_S``, 0.5 s), so a file held by someone else answers a
miss inside it; a write here holds the lock ~0.1 ms, so a wait this long means the file is
held, not contended."""
LOG_EVERY_S = 60.0
"""At most one warning per this many seconds while calls fail (each is counted)."""
REOPEN_AFTER_S = 5.0
"""After a failed open, calls answer their default at once until this has passed."""
MAX_PENDING = 4_096
"""Writes queued for the next batch; one more is skipped (counted)."""
CLOSE_TIMEOUT_S = 10.0
"""At shutdown: the last batch's bound, then the close's."""
SWEEP_EVERY = 256
"""Rows a process adds to a table (entries, vectors) between two sweeps of its expired rows."""
SWEEP_BATCH = 512
"""Most rows one sweep removes (a sweep holds the write lock ~1 ms)."""

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


class FileTotals(NamedTuple):
    entries: int
    bytes: int
    prompts: int


def read_totals(path: Path) -> FileTotals | None:
    """What the file holds (answers, their bytes, semantic prompts), read-only, for a process
    that does not serve from it (the dashboard's): the kept totals and one count over the
    smallest index. None: no file yet, or not readable now."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return None
    try:
        n, size = db.execute("SELECT n, bytes FROM entry_totals WHERE id = 0").fetchone()
        (prompts,) = db.execute("SELECT count(*) FROM vectors").fetchone()
        return FileTotals(int(n), int(size), int(prompts))
    except (sqlite3.Error, TypeError):  # locked, corrupt, or made before these tables
        return None
    finally:
        db.close()


def prefix_range(prefix: str) -> tuple[str, str]:
    """``(low, high)``: a key starts with ``prefix`` iff ``low <= key < high`` (an index range,
    not a scan; ``prefix`` is not empty)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Deferred(NamedTuple):
    fn: Callable[[sqlite3.Connection], object]
    done: Callable[[object], None] | None


def _in_one_transaction(db: sqlite3.Connection, batch: list[Deferred]) -> list[object]:
    with immediate(db):
        return [item.fn(db) for item in batch]


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
        self._reads, self._writes = SerialConnection(self._open), SerialConnection(self._open)
        self._retry_at = float("-inf")
        self._logged_at = float("-inf")
        self.errors = 0
        """Calls that failed (answered their default), writes lost or skipped."""
        self._pending: list[Deferred] = []
        self._wake = trio.Event()
        self._queued = 0
        """Writes queued so far; :attr:`_written` of them have been tried."""
        self._written = 0
        self._batch_done = trio.Event()

    async def read(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(connection)`` (no writes) in a worker thread, or ``default`` when it fails."""
        return await self._run(self._reads, fn, default)

    async def write(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(connection)`` in a worker thread, or ``default`` when the file fails."""
        return await self._run(self._writes, fn, default)

    async def write_in_order(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """:meth:`write`, after every write :meth:`defer` queued before this call has been
        tried: a delete or flush never lands before a store its caller made earlier."""
        await self.drain()
        return await self.write(fn, default)

    async def _run(
        self, conn: SerialConnection, fn: Callable[[sqlite3.Connection], T], default: T
    ) -> T:
        try:
            return await conn.run(fn)  # closed: sqlite3.ProgrammingError
        except Exception as exc:  # the file, or a bug in fn: a default, counted and logged
            self.failed(exc)
            return default

    def defer(
        self,
        fn: Callable[[sqlite3.Connection], T],
        done: Callable[[T], None] | None = None,
    ) -> None:
        """Queue ``fn(connection)`` (no transaction of its own) for the next batch;
        ``done(result)`` is called once its batch has committed."""
        if len(self._pending) >= MAX_PENDING:
            self.failed(OverflowError(f"more than {MAX_PENDING} writes waiting"))
            return
        self._pending.append(Deferred(fn, done))  # type: ignore[arg-type]
        self._queued += 1
        self._wake.set()

    async def drain(self) -> None:
        """Until every write queued before this call has been tried."""
        target = self._queued
        while self._written < target:
            await self._batch_done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The ``cache-file`` service: write the queued batches; at the end, the last one
        and close the file."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                await self._write_batch()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self._write_batch()
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await trio.to_thread.run_sync(self.close, abandon_on_cancel=True)

    async def _write_batch(self) -> None:
        self._wake = trio.Event()
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results = await self.write(lambda db: _in_one_transaction(db, batch), None)
            if results is None:
                self.errors += len(batch) - 1  # the failed call counted one
            else:
                for item, result in zip(batch, results, strict=True):
                    if item.done is not None:
                        item.done(result)
        finally:  # tried, whatever happened: no drain() waits for it forever
            self._written += len(batch)
            self._batch_done.set()
            self._batch_done = trio.Event()

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = self._clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "cache file %s failed (%d calls so far answered as misses or skipped "
                "writes): %r", self.path, self.errors, exc,
            )  # fmt: skip

    def _open(self) -> sqlite3.Connection:
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
        self._reads.close()
        self._writes.close()


__all__ = [
    "BUSY_TIMEOUT_S",
    "CLOSE_TIMEOUT_S",
    "FILE_NAME",
    "LOG_EVERY_S",
    "MAX_PENDING",
    "MAX_ROWS",
    "REOPEN_AFTER_S",
    "SCHEMA",
    "SWEEP_BATCH",
    "SWEEP_EVERY",
    "CacheFile",
    "FileTotals",
    "open_cache_file",
    "prefix_range",
    "read_totals",
]
