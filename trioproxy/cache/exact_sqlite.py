"""The exact cache in ``cache.sqlite3`` (:mod:`.cache_file`): shared by one host's worker
processes, kept across restarts. The default without ``storage.redis_url``.

:class:`SqliteEntries` is the synchronous part, a connection in, values out, time as ``now``
(wall-clock seconds, the same clock in every process): a row keeps its ``expires_at``; an
expired row is never returned and is removed by a sweep of at most :data:`SWEEP_BATCH` rows
every :data:`SWEEP_EVERY` puts (a read never writes). Bounded like
:class:`~trioproxy.cache.exact.MemoryExactCache` by entries and bytes: a put over a bound
evicts the oldest entries first (insertion order; a read does not refresh an entry, that
would make every hit a write). Each put is one ``BEGIN IMMEDIATE`` transaction.

:class:`SqliteExactCache` is its :class:`~trioproxy.cache.exact.ExactCache` face: a read
runs in a thread on the file's read connection, a put is written behind in the file's next
batch (:class:`CacheFile`), a delete or flush waits for the puts queued before it; a call
that fails is a miss, a skipped write or nothing dropped, never an error. A thread hop costs
~70 µs of CPU (a read ~130 µs in all), so each worker keeps the entries it has read or
written lately in a small :class:`~trioproxy.cache.exact.MemoryExactCache` in front
(:data:`FRONT_ENTRIES`, :data:`FRONT_BYTES`; with the entry's own ``expires_at``): a repeat
hit costs what it did before the file. What the front may hold that the file no longer does
is an answer still valid for its key (another worker's newer answer for the same key, or
one the file's bound evicted) until it expires; a flush or delete reaches every worker's
front through the cache commands (:mod:`trioproxy.server.cache_commands`), within about a
second, as it reaches every worker's semantic index. Cost: ``loadtest/cache_store_latency.py``.
"""

from __future__ import annotations

import sqlite3

from trioproxy.cache.cache_file import SWEEP_BATCH, SWEEP_EVERY, CacheFile, prefix_range
from trioproxy.cache.exact import ExactStats, MemoryExactCache

EVICT_BATCH = 64
"""Oldest rows read at once while a put makes room under the byte bound."""
FRONT_ENTRIES = 10_000
FRONT_BYTES = 32 * 1024 * 1024
"""The per-worker memory front's bounds (least recently used out first)."""


class SqliteEntries:
    def __init__(self, *, max_entries: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = ExactStats()
        """entries/bytes: as last seen by a put (every process's); the rest: this process's."""
        self._puts = 0

    def get(self, db: sqlite3.Connection, key: str, now: float) -> tuple[bytes, float] | None:
        """The live entry's value and ``expires_at``."""
        row = db.execute(
            "SELECT value, expires_at FROM entries WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return None if row is None else (bytes(row[0]), float(row[1]))

    def put_in(
        self, db: sqlite3.Connection, key: str, value: bytes, ttl_s: float, now: float
    ) -> None:
        """Store (replace) an entry and keep the bounds, in the caller's transaction."""
        if ttl_s <= 0 or len(value) > self.max_bytes:
            return
        db.execute("DELETE FROM entries WHERE key = ?", (key,))
        db.execute(
            "INSERT INTO entries(key, value, expires_at, size) VALUES (?, ?, ?, ?)",
            (key, value, now + ttl_s, len(value)),
        )
        self._puts += 1
        if self._puts % SWEEP_EVERY == 0:
            self.sweep(db, now)
        self._evict(db)

    def _evict(self, db: sqlite3.Connection) -> None:
        n, size = db.execute("SELECT n, bytes FROM entry_totals").fetchone()
        if n > self.max_entries:
            over = n - self.max_entries
            db.execute(
                "DELETE FROM entries WHERE rowid IN "
                "(SELECT rowid FROM entries ORDER BY rowid LIMIT ?)",
                (over,),
            )
            self.stats.evictions += over
            n, size = db.execute("SELECT n, bytes FROM entry_totals").fetchone()
        while size > self.max_bytes:
            oldest = db.execute(
                "SELECT rowid, size FROM entries ORDER BY rowid LIMIT ?", (EVICT_BATCH,)
            ).fetchall()
            doomed = []
            for rowid, row_size in oldest:
                if size <= self.max_bytes:
                    break
                doomed.append((rowid,))
                size -= row_size
            db.executemany("DELETE FROM entries WHERE rowid = ?", doomed)
            self.stats.evictions += len(doomed)
            n -= len(doomed)
        self.stats.entries, self.stats.bytes = n, size

    def sweep(self, db: sqlite3.Connection, now: float) -> int:
        """Remove up to :data:`SWEEP_BATCH` expired rows; how many were removed."""
        removed = db.execute(
            "DELETE FROM entries WHERE rowid IN "
            "(SELECT rowid FROM entries WHERE expires_at <= ? LIMIT ?)",
            (now, SWEEP_BATCH),
        ).rowcount
        self.stats.expirations += removed
        return removed

    def delete(self, db: sqlite3.Connection, key: str) -> bool:
        return db.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0

    def flush_prefix(self, db: sqlite3.Connection, prefix: str) -> int:
        if not prefix:
            return db.execute("DELETE FROM entries").rowcount
        low, high = prefix_range(prefix)
        return db.execute("DELETE FROM entries WHERE key >= ? AND key < ?", (low, high)).rowcount


class SqliteExactCache:
    def __init__(
        self,
        file: CacheFile,
        entries: SqliteEntries | None = None,
        *,
        front: MemoryExactCache | None = None,
    ) -> None:
        self.file = file
        self.entries = entries or SqliteEntries()
        self.front = front or MemoryExactCache(max_entries=FRONT_ENTRIES, max_bytes=FRONT_BYTES)
        """Also what makes an immediate repeat a hit while its answer is being written."""
        self._removals = 0
        """Deletes and flushes begun: a read that saw one begin does not fill the front (it
        may have read a row the removal then took out of the file)."""

    @property
    def bounds(self) -> tuple[int, int]:
        """(most entries, most bytes) the file keeps; the oldest go first (the dashboard's
        cache page shows them)."""
        return self.entries.max_entries, self.entries.max_bytes

    def statistics(self) -> ExactStats:
        s = self.entries.stats
        return ExactStats(s.entries, s.bytes, s.evictions, s.expirations)

    async def get(self, key: str, *, now: float) -> bytes | None:
        value = self.front.get_nowait(key, now=now)
        if value is not None:
            return value
        removals = self._removals
        found = await self.file.read(lambda db: self.entries.get(db, key, now), None)
        if found is None:
            return None
        value, expires_at = found
        if removals == self._removals:
            self.front.put_nowait(key, value, ttl_s=expires_at - now, now=now)
        return value

    async def put(self, key: str, value: bytes, *, ttl_s: float, now: float) -> None:
        if ttl_s <= 0 or len(value) > self.entries.max_bytes:
            return
        self.front.put_nowait(key, value, ttl_s=ttl_s, now=now)
        self.file.defer(lambda db: self.entries.put_in(db, key, value, ttl_s, now))

    async def delete(self, key: str) -> bool:
        self._removals += 1
        in_front = await self.front.delete(key)
        in_file = await self.file.write_in_order(lambda db: self.entries.delete(db, key), False)
        return in_front or in_file

    async def flush_namespace(self, namespace: str) -> int:
        return await self.flush_prefix(namespace + ":")

    async def flush_prefix(self, prefix: str) -> int:
        self._removals += 1
        in_front = await self.front.flush_prefix(prefix)
        in_file = await self.file.write_in_order(
            lambda db: self.entries.flush_prefix(db, prefix), 0
        )
        return max(in_front, in_file)


__all__ = [
    "EVICT_BATCH",
    "FRONT_BYTES",
    "FRONT_ENTRIES",
    "SqliteEntries",
    "SqliteExactCache",
]
