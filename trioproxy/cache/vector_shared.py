"""The embedded semantic index, shared by one host's worker processes through
``cache.sqlite3`` (:mod:`.cache_file`, table ``vectors``).

Each worker searches its own in-memory :class:`~trioproxy.cache.vector_index.HnswIndex`
(~0.1 ms a query); the file holds the facts: one row per prompt stored (namespace, entry id,
prompt, float32 vector, ``expires_at``). :class:`SharedHnswIndex` adds a prompt to its own
index and queues its row for the file's next batch; :meth:`SharedHnswIndex.run` (a worker service) builds the index
from the rows at start and then reads rows added after the last one it has seen every
:data:`TAIL_INTERVAL_S` (by id, at most :data:`TAIL_BATCH` a read), so a prompt stored on one
worker is found on another within about that. A delete or flush drops the rows and this
worker's entries; the dashboard's cache commands reach every worker
(:mod:`trioproxy.server.cache_commands`), so each drops its own. A row whose record is gone
(evicted, flushed) is a stale miss, never a wrong answer: the record in ``entries`` is what
is served. The rows are bounded (:data:`MAX_ROWS`, the oldest dropped first) and expired rows
are swept in batches of :data:`SWEEP_BATCH`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trio

from trioproxy.cache.cache_file import MAX_ROWS, SWEEP_BATCH, SWEEP_EVERY, CacheFile, prefix_range
from trioproxy.cache.vector_index import Hit, HnswIndex

log = logging.getLogger(__name__)

TAIL_INTERVAL_S = 0.5
"""Between two reads of rows other workers added (one indexed range read when none)."""
TAIL_BATCH = 1_000
"""Most rows one read takes (a start-up build reads batch after batch)."""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    namespace: str
    entry_id: str
    prompt: str
    vec: np.ndarray
    expires_at: float


class VectorRows:
    """The ``vectors`` table: synchronous, a connection in, values out, time as ``now``."""

    def __init__(self, *, dim: int, max_rows: int = MAX_ROWS) -> None:
        self.dim = dim
        self.max_rows = max_rows
        self._adds = 0

    def add(
        self,
        db: sqlite3.Connection,
        namespace: str,
        entry_id: str,
        vec: np.ndarray,
        prompt: str,
        expires_at: float,
        now: float,
    ) -> int:
        """Replace the entry's row, in the caller's transaction; the new row's id."""
        blob = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1).tobytes()
        db.execute(
            "DELETE FROM vectors WHERE namespace = ? AND entry_id = ?", (namespace, entry_id)
        )
        cur = db.execute(
            "INSERT INTO vectors(namespace, entry_id, prompt, vec, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (namespace, entry_id, prompt, blob, expires_at),
        )
        rowid = int(cur.lastrowid or 0)
        self._adds += 1
        if self._adds % SWEEP_EVERY == 0:
            self.sweep(db, now, rowid)
        return rowid

    def sweep(self, db: sqlite3.Connection, now: float, newest: int) -> int:
        """Drop up to :data:`SWEEP_BATCH` expired rows, and the rows older than the newest
        ``max_rows`` (ids are dense enough: a bound by id keeps at most ``max_rows``)."""
        expired = db.execute(
            "DELETE FROM vectors WHERE id IN "
            "(SELECT id FROM vectors WHERE expires_at <= ? LIMIT ?)",
            (now, SWEEP_BATCH),
        ).rowcount
        surplus = db.execute("DELETE FROM vectors WHERE id <= ?", (newest - self.max_rows,))
        return expired + surplus.rowcount

    def after(self, db: sqlite3.Connection, last: int, now: float, limit: int) -> list[Row]:
        """Live rows with an id above ``last``, in id order (expired and misshapen ones
        skipped); an empty list means none is left."""
        rows = db.execute(
            "SELECT id, namespace, entry_id, prompt, vec, expires_at FROM vectors "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (last, limit),
        ).fetchall()
        out = []
        for rowid, ns, entry_id, prompt, blob, expires_at in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            if expires_at > now and vec.shape[0] == self.dim:
                out.append(Row(rowid, ns, entry_id, prompt, vec, expires_at))
            else:  # keep the position: an empty batch means the end
                out.append(Row(rowid, "", "", "", vec, 0.0))
        return out

    def delete(self, db: sqlite3.Connection, namespace: str, entry_id: str) -> int:
        return db.execute(
            "DELETE FROM vectors WHERE namespace = ? AND entry_id = ?", (namespace, entry_id)
        ).rowcount

    def flush_namespace(self, db: sqlite3.Connection, namespace: str) -> int:
        return db.execute("DELETE FROM vectors WHERE namespace = ?", (namespace,)).rowcount

    def flush_prefix(self, db: sqlite3.Connection, prefix: str) -> int:
        if not prefix:
            return db.execute("DELETE FROM vectors").rowcount
        low, high = prefix_range(prefix)
        return db.execute(
            "DELETE FROM vectors WHERE namespace >= ? AND namespace < ?", (low, high)
        ).rowcount


class SharedHnswIndex:
    """A :class:`~trioproxy.cache.vector_index.VectorIndex`: this worker's hnswlib index,
    kept in step with the rows every worker writes."""

    def __init__(
        self,
        file: CacheFile,
        index: HnswIndex,
        rows: VectorRows | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.file = file
        self.index = index
        self.rows = rows or VectorRows(dim=index.core.dim)
        self.clock = clock
        self.seen = 0
        """The highest row id this index has read (or written)."""
        self._mine: set[int] = set()
        """Rows this worker wrote and has not yet passed while reading (already indexed)."""

    async def search(self, namespace: str, vec: np.ndarray, k: int = 1, *, now: float) -> list[Hit]:
        return await self.index.search(namespace, vec, k, now=now)

    async def add(
        self,
        namespace: str,
        entry_id: str,
        vec: np.ndarray,
        prompt: str,
        *,
        expires_at: float,
        now: float,
    ) -> None:
        await self.index.add(namespace, entry_id, vec, prompt, expires_at=expires_at, now=now)
        self.file.defer(
            lambda db: self.rows.add(db, namespace, entry_id, vec, prompt, expires_at, now),
            self._written,
        )

    def _written(self, rowid: int) -> None:
        if rowid > self.seen:  # not read back yet: skipped when it is (already indexed)
            self._mine.add(rowid)

    async def delete(self, namespace: str, entry_id: str) -> bool:
        await self.file.write_in_order(lambda db: self.rows.delete(db, namespace, entry_id), 0)
        return await self.index.delete(namespace, entry_id)

    async def flush_namespace(self, namespace: str) -> int:
        await self.file.write_in_order(lambda db: self.rows.flush_namespace(db, namespace), 0)
        return await self.index.flush_namespace(namespace)

    async def flush_prefix(self, prefix: str) -> int:
        await self.file.write_in_order(lambda db: self.rows.flush_prefix(db, prefix), 0)
        return await self.index.flush_prefix(prefix)

    async def catch_up(self) -> int:
        """Index one batch of rows added since :attr:`seen`; how many rows were read."""
        now = self.clock()
        none: list[Row] = []
        batch = await self.file.read(
            lambda db: self.rows.after(db, self.seen, now, TAIL_BATCH), none
        )
        fresh = [(r.namespace, r.entry_id, r.vec, r.prompt, r.expires_at)
                 for r in batch if r.namespace and r.id not in self._mine]  # fmt: skip
        if fresh:
            await self.index.add_many(fresh)
            log.debug("semantic index: %d entries read from %s", len(fresh), self.file.path.name)
        if batch:
            self.seen = batch[-1].id
            self._mine = {r for r in self._mine if r > self.seen}
        return len(batch)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The worker service: build from the file (lookups meanwhile see what is built so
        far), then tail it."""
        task_status.started()
        began, read = time.monotonic(), 0
        while n := await self.catch_up():
            read += n
        entries = self.index.core.statistics().entries
        log.info("semantic index built from %s: %d entries (%d rows read) in %.1f s",
                 self.file.path.name, entries, read, time.monotonic() - began)  # fmt: skip
        while True:
            await trio.sleep(TAIL_INTERVAL_S)
            while await self.catch_up() == TAIL_BATCH:
                pass


__all__ = [
    "MAX_ROWS",
    "TAIL_BATCH",
    "TAIL_INTERVAL_S",
    "Row",
    "SharedHnswIndex",
    "VectorRows",
]
