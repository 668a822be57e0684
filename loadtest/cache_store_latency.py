"""Latency of the embedded cache stores' calls as the request path makes them (through
``trio``, the thread hop included): exact ``get`` (hit and miss) and ``put``, and the
semantic index's top-1 ``search``, for the in-process stores (``MemoryExactCache``, a bare
``HnswIndex``) against the SQLite file shared by a host's workers (``SqliteExactCache``,
``SharedHnswIndex``).

    .venv/bin/python loadtest/cache_store_latency.py [--entries 10000] [--value-bytes 2000]
        [--calls 4000] [--tasks 1 16] [--vectors 10000]

A put of the SQLite store is queued (its cost on the request path); "put+write" also waits
until its batch is written (one put per batch with 1 task: the unloaded worst case; with 16
the puts share batches). Each store is filled with ``--entries`` entries of ``--value-bytes`` (a chat answer's
serialised entry is ~1-3 KB) in a fresh temp dir. ``SqliteExactCache`` reads what it wrote
from its per-worker memory front; "file only" reads entries another worker stored (a front
that keeps nothing: every call is a thread hop and a query); then each call is timed ``--calls`` times
by ``--tasks`` concurrent tasks (1: one request at a time; 16: a busy worker). A put writes a
new key (an answer stored). Searches are near-duplicates of stored vectors (the hit case),
one namespace of ``--vectors`` rows (``SharedHnswIndex`` searches the same in-memory index;
its add also appends the row). Prints p50 / p99 in microseconds per call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import trio
from common import percentile

from trioproxy.cache.cache_file import FILE_NAME, CacheFile
from trioproxy.cache.exact import ExactCache, MemoryExactCache
from trioproxy.cache.exact_sqlite import SqliteExactCache
from trioproxy.cache.vector_index import HnswCore, HnswIndex, VectorIndex
from trioproxy.cache.vector_shared import SharedHnswIndex

DIM = 384
NOW = 1_000.0


async def timed(
    op: Callable[[int], Awaitable[object]], calls: int, tasks: int
) -> tuple[float, float]:
    """p50, p99 in µs of ``op(i)`` for ``calls`` values of i, run by ``tasks`` tasks."""
    lat: list[float] = []
    per = calls // tasks

    async def run(t: int) -> None:
        for j in range(per):
            t0 = time.perf_counter()
            await op(t * per + j)
            lat.append((time.perf_counter() - t0) * 1e6)

    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(run, t)
    return percentile(lat, 50), percentile(lat, 99)


async def exact_rows(
    name: str, cache: ExactCache, args: argparse.Namespace, filler: ExactCache | None = None
) -> None:
    """``filler``: who stores the entries (another worker's store on the same file)."""
    value = bytes(np.random.default_rng(0).integers(0, 256, args.value_bytes, dtype=np.uint8))
    file = getattr(filler or cache, "file", None)
    for i in range(args.entries):
        await (filler or cache).put(f"ns:{i}", value, ttl_s=3600, now=NOW)
        if file is not None and i % 1000 == 999:
            await file.drain()  # a put does not yield: the writer takes 1,000 at a time
    if file is not None:
        await file.drain()
    n = args.entries
    rows: dict[str, tuple[float, float]] = {}
    for tasks in args.tasks:  # reads first: the puts below push the entries out of the front
        rows[f"get hit|{tasks}"] = await timed(
            lambda i: cache.get(f"ns:{i % n}", now=NOW), args.calls, tasks
        )
        rows[f"get miss|{tasks}"] = await timed(
            lambda i: cache.get(f"no:{i}", now=NOW), args.calls, tasks
        )
    for tasks in args.tasks:
        rows[f"put|{tasks}"] = await timed(
            lambda i, t=tasks: cache.put(f"new{t}:{i}", value, ttl_s=3600, now=NOW),
            args.calls, tasks,
        )  # fmt: skip
        if file is not None:
            await file.drain()

            async def written(i: int, t: int = tasks) -> None:
                await cache.put(f"w{t}:{i}", value, ttl_s=3600, now=NOW)
                await file.drain()

            rows[f"put+write|{tasks}"] = await timed(written, args.calls, tasks)
    for key, (p50, p99) in rows.items():
        op, tasks_ = key.split("|")
        print(f"{name:<30} {op:<9} tasks={tasks_:<3} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs")


def vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def search_rows(name: str, index: VectorIndex, args: argparse.Namespace) -> None:
    data = vectors(args.vectors, 1)
    for i, v in enumerate(data):
        await index.add("ns", f"e{i}", v, f"prompt {i}", expires_at=NOW + 3600, now=NOW)
    noise = vectors(args.calls, 2) * 0.05
    queries = data[np.arange(args.calls) % len(data)] + noise
    for tasks in args.tasks:
        p50, p99 = await timed(lambda i: index.search("ns", queries[i], 1, now=NOW),
                               args.calls, tasks)  # fmt: skip
        print(f"{name:<30} {'search':<9} tasks={tasks:<3} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs")
    add = await timed(
        lambda i: index.add("ns", f"x{i}", queries[i], "p", expires_at=NOW + 3600, now=NOW),
        args.calls // 5, 1,
    )  # fmt: skip
    print(f"{name:<30} {'add':<9} tasks=1   p50 {add[0]:8.1f} µs   p99 {add[1]:8.1f} µs")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tp-cache-store-", dir=args.dir) as d:
        async with trio.open_nursery() as nursery:
            await stores(nursery, Path(d), args)
            nursery.cancel_scope.cancel()


async def stores(nursery: trio.Nursery, d: Path, args: argparse.Namespace) -> None:
    file = CacheFile(d / FILE_NAME)
    await nursery.start(file.run)  # the batch writer, as the cache-file service runs it
    await exact_rows("MemoryExactCache", MemoryExactCache(), args)
    await exact_rows("SqliteExactCache", SqliteExactCache(file), args)
    other = SqliteExactCache(CacheFile(d / "other.sqlite3"))
    await nursery.start(other.file.run)
    no_front = MemoryExactCache(max_entries=0)
    await exact_rows("SqliteExactCache, file only", SqliteExactCache(other.file, front=no_front),
                     args, filler=other)  # fmt: skip
    if args.vectors:
        await search_rows("HnswIndex", HnswIndex(HnswCore(dim=DIM)), args)
        shared = SharedHnswIndex(file, HnswIndex(HnswCore(dim=DIM)), clock=lambda: NOW)
        await search_rows("SharedHnswIndex", shared, args)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=10_000)
    p.add_argument("--value-bytes", type=int, default=2_000)
    p.add_argument(
        "--calls", type=int, default=4_000, help="per row (<= 4,096: a put row never yields)"
    )
    p.add_argument("--tasks", type=int, nargs="+", default=[1, 16])
    p.add_argument("--vectors", type=int, default=10_000, help="0: skip the index rows")
    p.add_argument("--dir", help="where the temp dir goes (default: the system's)")
    trio.run(main, p.parse_args())
