"""The embedded cache file (``cache.sqlite3``): the exact store and the shared vector rows.

The synchronous parts run on a plain connection with time given as ``now``; two connections
to one file stand for two worker processes. The async faces are checked for what a failing
file does: misses and skipped writes, counted, never an exception."""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from tests.test_cache_vector import check_contract, near, unit
from trioproxy.cache import cache_file
from trioproxy.cache.cache_file import SWEEP_BATCH, CacheFile, open_cache_file, prefix_range
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.exact_sqlite import SqliteEntries, SqliteExactCache
from trioproxy.cache.vector_index import HnswCore, HnswIndex
from trioproxy.cache.vector_shared import SharedHnswIndex, VectorRows
from trioproxy.store.sqlite_file import immediate

NO_FRONT = MemoryExactCache(max_entries=0)
"""A memory front that keeps nothing: every call goes to the file."""


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    return open_cache_file(str(tmp_path / "cache.sqlite3"))


def put(
    e: SqliteEntries, db: sqlite3.Connection, key: str, value: bytes, ttl: float, now: float
) -> None:
    """One put in a transaction of its own (the cache file batches them)."""
    with immediate(db):
        e.put_in(db, key, value, ttl, now)


def totals(db: sqlite3.Connection) -> tuple[int, int]:
    n, size = db.execute("SELECT n, bytes FROM entry_totals").fetchone()
    assert (n, size) == db.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM entries"
    ).fetchone()  # the triggers' totals are the table's
    return n, size


def test_ttl_on_the_callers_clock(db: sqlite3.Connection) -> None:
    e = SqliteEntries()
    put(e, db, "ns:a", b"x", 10, 100.0)
    assert e.get(db, "ns:a", 109.9) == (b"x", 110.0)
    assert e.get(db, "ns:a", 110.0) is None
    assert totals(db) == (1, 1)  # a read never writes: the sweep removes it
    assert e.sweep(db, 110.0) == 1 and totals(db) == (0, 0)
    put(e, db, "ns:b", b"x", 0, 100.0)  # ttl 0: not cached
    assert e.get(db, "ns:b", 100.0) is None


def test_sweeps_are_bounded(db: sqlite3.Connection) -> None:
    e = SqliteEntries()
    for i in range(SWEEP_BATCH + 10):
        put(e, db, f"n:{i}", b"v", 1, 0.0)
    assert e.sweep(db, 5.0) == SWEEP_BATCH
    assert e.sweep(db, 5.0) == 10
    assert e.stats.expirations == SWEEP_BATCH + 10


def test_bounds_evict_the_oldest_first(db: sqlite3.Connection) -> None:
    e = SqliteEntries(max_entries=3, max_bytes=10)
    for k in "abc":
        put(e, db, f"n:{k}", b"12", 60, 0.0)
    assert e.get(db, "n:a", 1.0) == (b"12", 60.0)  # a read does not refresh: a stays oldest
    put(e, db, "n:d", b"12", 60, 2.0)  # over 3 entries: a goes
    assert e.get(db, "n:a", 3.0) is None and e.get(db, "n:b", 3.0) == (b"12", 60.0)
    put(e, db, "n:e", b"12345", 60, 4.0)  # 11 bytes > 10: b goes
    assert totals(db) == (3, 9)
    assert (e.stats.entries, e.stats.bytes, e.stats.evictions) == (3, 9, 2)
    assert e.get(db, "n:b", 5.0) is None and e.get(db, "n:c", 5.0) == (b"12", 60.0)
    put(e, db, "n:c", b"123", 60, 6.0)  # replacing a key: its old size leaves the totals
    assert totals(db) == (3, 10)
    put(e, db, "n:big", b"x" * 11, 60, 7.0)  # larger than the whole bound: not stored
    assert e.get(db, "n:big", 8.0) is None and totals(db) == (3, 10)


def test_two_processes_share_entries_and_bounds(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.sqlite3")
    a, b = open_cache_file(path), open_cache_file(path)
    ea, eb = SqliteEntries(max_entries=4), SqliteEntries(max_entries=4)
    for i in range(3):
        put(ea, a, f"n:a{i}", b"v", 60, float(i))
    assert eb.get(b, "n:a0", 5.0) == (b"v", 60.0)
    for i in range(3):
        put(eb, b, f"n:b{i}", b"v", 60, float(10 + i))  # the bound counts a's entries too
    assert totals(a) == (4, 4)
    assert [ea.get(a, f"n:a{i}", 20.0) for i in range(3)] == [
        None,
        None,
        (b"v", 62.0),
    ]  # oldest out


def test_delete_and_flush(db: sqlite3.Connection) -> None:
    e = SqliteEntries()
    for key in ("n1:a", "n1:b", "n10:a", "n2:a"):
        put(e, db, key, b"v", 60, 0.0)
    assert e.delete(db, "n1:a") and not e.delete(db, "n1:a")
    assert e.flush_prefix(db, "n1:") == 1  # n10's entries are not n1's
    assert e.get(db, "n10:a", 1.0) == (b"v", 60.0)
    assert e.flush_prefix(db, "n") == 2 and totals(db) == (0, 0)


@pytest.mark.parametrize("prefix", ["a", "s1f:", "abc\x7f"])
def test_prefix_range(prefix: str) -> None:
    low, high = prefix_range(prefix)
    for key in (prefix, prefix + "x", prefix + "\U0010ffff", prefix[:-1], prefix + "\x00"):
        assert (low <= key < high) == key.startswith(prefix)
    assert not low <= prefix[:-1] + chr(ord(prefix[-1]) + 1) < high


async def started(nursery: trio.Nursery, path: Path, **kwargs: Any) -> CacheFile:
    """A cache file with its service (the batch writer) running, as in a worker."""
    file = CacheFile(path, **kwargs)
    await nursery.start(file.run)
    return file


async def test_exact_cache_contract(nursery: trio.Nursery, tmp_path: Path) -> None:
    c = SqliteExactCache(await started(nursery, tmp_path / "cache.sqlite3"))
    await c.put("n1:a", b"\x00bin", ttl_s=60, now=0)
    await c.put("n1:b", b"v", ttl_s=60, now=0)
    await c.put("n2:a", b"v", ttl_s=60, now=0)
    assert await c.get("n1:a", now=1) == b"\x00bin"
    assert await c.delete("n2:a") and await c.get("n2:a", now=1) is None
    assert await c.flush_namespace("n1") == 2
    assert await c.get("n1:b", now=1) is None
    assert c.file.errors == 0


async def test_puts_are_written_in_batches(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    c = SqliteExactCache(await started(nursery, path))
    await c.put("n:first", b"v", ttl_s=60, now=0)
    await c.file.drain()
    db = open_cache_file(str(path))
    assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0)
    for i in range(50):  # queued before the writer runs: one transaction
        await c.put(f"n:{i}", b"v", ttl_s=60, now=0)
    await c.file.drain()
    assert totals(db) == (51, 51)
    _, frames, _ = db.execute("PRAGMA wal_checkpoint").fetchone()
    assert frames <= 5  # one commit's pages (the table, two indexes, the totals), not 50 commits'


async def test_a_write_in_order_lands_after_the_writes_queued_before_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """What deletes and flushes go through: the puts queued before are in the file when it
    runs (a plain write would take the connection before the batch writer's turn)."""
    file = await started(nursery, tmp_path / "cache.sqlite3")
    c = SqliteExactCache(file)
    for i in range(20):
        await c.put(f"n:{i}", b"v", ttl_s=60, now=0)

    def count(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    assert await file.write_in_order(count, -1) == 20


async def test_a_write_that_raises_loses_its_batch_and_nothing_waits_forever(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A deferred write that raises something other than a database error (a bug) fails its
    batch like a database error would: counted, and drain() (which deletes and flushes
    wait on) returns; the next batch is written."""
    file = await started(nursery, tmp_path / "cache.sqlite3")
    c = SqliteExactCache(file)

    def broken(db: sqlite3.Connection) -> None:
        raise ValueError("a bug in a deferred write")

    await c.put("n:lost", b"v", ttl_s=60, now=0)
    file.defer(broken)
    with trio.fail_after(10):
        await file.drain()
    assert file.errors == 2  # both writes of the failed batch
    await c.put("n:kept", b"v", ttl_s=60, now=0)
    with trio.fail_after(10):
        assert await c.delete("n:kept")  # its drain() waits for the put's batch, not forever


async def test_the_memory_front_keeps_what_the_file_said(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "cache.sqlite3"
    writer = SqliteExactCache(await started(nursery, path))
    reader = SqliteExactCache(await started(nursery, path))  # another worker
    await writer.put("n:a", b"v", ttl_s=10, now=100.0)
    assert await writer.front.get("n:a", now=100.0) == b"v"  # a repeat needs no file read
    await writer.file.drain()
    assert await reader.front.get("n:a", now=101.0) is None
    assert await reader.get("n:a", now=101.0) == b"v"
    reader.file.close()  # from here the reader's file fails: only its front answers
    assert await reader.get("n:a", now=109.9) == b"v"
    assert await reader.get("n:a", now=110.0) is None  # the file's expires_at, not a new TTL
    await writer.put("n:b", b"v", ttl_s=10, now=100.0)
    assert await writer.flush_namespace("n") == 2 and await writer.get("n:b", now=101) is None


class HeldRead(SqliteEntries):
    """A read that found its row and is held (in its thread) until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.have_read, self.proceed = threading.Event(), threading.Event()

    def get(self, db: sqlite3.Connection, key: str, now: float) -> tuple[bytes, float] | None:
        found = super().get(db, key, now)
        self.have_read.set()
        self.proceed.wait(10)
        return found


@pytest.mark.parametrize("removal", ["delete", "flush"])
async def test_a_read_overtaken_by_a_removal_does_not_put_the_entry_back(
    nursery: trio.Nursery, tmp_path: Path, removal: str
) -> None:
    """A lookup read the row, then a delete (a reported bad hit) or a flush (the dashboard)
    took it out of the file and the front: the lookup still answers (it began first) but does
    not fill the front with it, or the worker served it until its TTL ran out."""
    entries = HeldRead()
    entries.proceed.set()
    c = SqliteExactCache(await started(nursery, tmp_path / "cache.sqlite3"), entries)
    await c.put("n:k", b"answer", ttl_s=3600, now=0)
    await c.file.drain()
    await c.front.delete("n:k")  # evicted from this worker's front (or another worker's write)
    entries.proceed.clear()
    async with trio.open_nursery() as lookups:
        lookups.start_soon(functools.partial(c.get, "n:k", now=1.0))
        await trio.to_thread.run_sync(entries.have_read.wait, 10)
        if removal == "delete":
            assert await c.delete("n:k")
        else:
            assert await c.flush_namespace("n") == 1
        entries.proceed.set()
    assert await c.get("n:k", now=2.0) is None


async def test_a_corrupt_file_is_misses_counted_and_logged_once(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    now = [0.0]
    file = await started(nursery, path, clock=lambda: now[0])
    c = SqliteExactCache(file, front=NO_FRONT)
    with caplog.at_level(logging.WARNING, logger=cache_file.__name__):
        await c.put("n:a", b"v", ttl_s=60, now=0)
        assert await c.get("n:a", now=1) is None
        assert not await c.delete("n:a")  # after the put's batch: failed too
        assert await c.flush_prefix("n") == 0
        assert c.file.errors == 4
        assert len(caplog.records) == 1  # once per LOG_EVERY_S
        now[0] += cache_file.LOG_EVERY_S
        assert await c.get("n:a", now=1) is None
        assert len(caplog.records) == 2
    path.unlink()  # replaced by a good file: used once the reopen delay has passed
    now[0] += cache_file.REOPEN_AFTER_S
    await c.put("n:a", b"v", ttl_s=60, now=0)
    await file.drain()
    assert await c.get("n:a", now=1) == b"v"


async def test_a_locked_file_skips_writes_and_still_reads(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "cache.sqlite3"
    file = await started(nursery, path, busy_timeout_s=0.05)
    c = SqliteExactCache(file, front=NO_FRONT)
    await c.put("n:a", b"v", ttl_s=60, now=0)
    await file.drain()
    holder = open_cache_file(str(path))
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        await c.put("n:b", b"v", ttl_s=60, now=0)
        await file.drain()  # its batch waited 0.05 s, then was skipped
        assert c.file.errors == 1
        assert await c.get("n:a", now=1) == b"v"  # WAL: readers do not wait for a writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await c.get("n:b", now=1) is None
    await c.put("n:b", b"v", ttl_s=60, now=0)
    await file.drain()
    assert await c.get("n:b", now=1) == b"v"


async def test_queued_writes_are_bounded(tmp_path: Path) -> None:
    file = CacheFile(tmp_path / "cache.sqlite3")  # its service not running: nothing written
    c = SqliteExactCache(file)
    for i in range(cache_file.MAX_PENDING + 3):
        await c.put(f"n:{i}", b"v", ttl_s=60, now=0)
    assert c.file.errors == 3


async def shared(nursery: trio.Nursery, path: Path) -> SharedHnswIndex:
    file = await started(nursery, path)
    return SharedHnswIndex(file, HnswIndex(HnswCore()), clock=lambda: 10.0)


async def test_shared_index_contract(nursery: trio.Nursery, tmp_path: Path) -> None:
    await check_contract(await shared(nursery, tmp_path / "cache.sqlite3"))


async def test_one_workers_prompt_reaches_the_others_index(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "cache.sqlite3"
    a, b = await shared(nursery, path), await shared(nursery, path)
    v, w = unit(1), unit(2)
    await a.add("ns", "e1", v, "prompt one", expires_at=100.0, now=0.0)
    await a.add("ns", "old", w, "expired", expires_at=5.0, now=0.0)
    await a.file.drain()
    assert await b.search("ns", near(v, 3), now=10.0) == []
    assert await b.catch_up() == 2 and await b.catch_up() == 0
    (hit,) = await b.search("ns", near(v, 3), now=10.0)
    assert (hit.entry_id, hit.prompt) == ("e1", "prompt one")
    assert [h.entry_id for h in await b.search("ns", w, now=10.0)] == ["e1"]  # not "old"
    readded: list[object] = []
    add_many = a.index.add_many

    async def spy(items: Any) -> None:
        readded.extend(items)
        await add_many(items)

    a.index.add_many = spy  # type: ignore[method-assign]
    await a.catch_up()  # its own rows: already indexed, not added twice
    assert readded == [] and a.index.core.statistics().entries == 2

    await b.add("ns", "e2", w, "prompt two", expires_at=100.0, now=10.0)
    await b.file.drain()
    await a.catch_up()
    assert (await a.search("ns", w, now=10.0))[0].entry_id == "e2"

    # a restart (a new index on the file) builds from the rows that are left
    await a.delete("ns", "e1")
    again = await shared(nursery, path)
    while await again.catch_up():
        pass
    assert again.index.core.statistics().entries == 1
    assert (await again.search("ns", v, now=10.0))[0].entry_id == "e2"
    await again.flush_prefix("n")
    fresh = await shared(nursery, path)
    assert await fresh.catch_up() == 0


def test_vector_rows_are_bounded(tmp_path: Path) -> None:
    db = open_cache_file(str(tmp_path / "cache.sqlite3"))
    rows = VectorRows(dim=4, max_rows=3)
    vec = np.ones(4, dtype=np.float32)
    for i in range(6):
        newest = rows.add(db, "ns", f"e{i}", vec, "p", 100.0 if i != 4 else 1.0, 0.0)
    assert rows.sweep(db, 50.0, newest) == 4  # e4 expired, and e0..e2 past the newest 3
    assert [r.entry_id for r in rows.after(db, 0, 50.0, 10)] == ["e3", "e5"]
    rows.add(db, "ns", "e3", vec, "p", 100.0, 0.0)  # re-added: one row, the newest id
    assert [r.entry_id for r in rows.after(db, 0, 50.0, 10)] == ["e5", "e3"]
