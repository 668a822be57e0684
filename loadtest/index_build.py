"""How long a worker's start takes to build its semantic index from ``cache.sqlite3``.

    .venv/bin/python loadtest/index_build.py [--rows 100000] [--namespaces 10] [--dir DIR]

Writes ``--rows`` random unit vectors (384 dimensions, the local model's) into a fresh cache
file's ``vectors`` table, spread over ``--namespaces`` namespaces, then builds a
:class:`~trioproxy.cache.vector_shared.SharedHnswIndex` from it exactly as a worker's
``vector-index`` service does (``catch_up`` until it reads nothing) and prints the wall time
and the process's CPU time (hnswlib inserts on every core, so CPU can exceed wall).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from trioproxy.cache.cache_file import CacheFile
from trioproxy.cache.vector_index import HnswCore, HnswIndex
from trioproxy.cache.vector_shared import SharedHnswIndex, VectorRows

DIM = 384


async def run(path: Path, rows: int, namespaces: int) -> None:
    table = VectorRows(dim=DIM)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((rows, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def fill(db: sqlite3.Connection) -> None:
        db.execute("BEGIN")
        for i in range(rows):
            table.add(db, f"ns{i % namespaces}", f"e{i}", vecs[i], f"prompt {i}", 1e12, 0.0)
        db.execute("COMMIT")

    await CacheFile(path).write(fill, None)
    index = SharedHnswIndex(CacheFile(path), HnswIndex(HnswCore(dim=DIM)))
    wall, cpu, read = time.perf_counter(), time.process_time(), 0
    while n := await index.catch_up():
        read += n
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    entries = index.index.core.statistics().entries
    print(f"{read} rows in {namespaces} namespaces -> {entries} entries: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--dir", type=Path, help="where the cache file goes (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        trio.run(run, Path(tmp) / "cache.sqlite3", args.rows, args.namespaces)


if __name__ == "__main__":
    main()
