"""Resident memory of a worker's in-memory semantic index per prompt it holds.

    .venv/bin/python loadtest/index_memory.py [--prompts 100000] [--namespaces 10]

Fills :class:`trioproxy.cache.vector_index.HnswCore` (the index each worker builds from
``cache.sqlite3``) with random unit 384-d vectors and 70-character prompts, as a worker's
start-up does (``add_many`` in batches of 1,000), and prints the growth of this process's
RSS (``/proc/self/statm``) per prompt: what ``storage.semantic_max_prompts`` costs each
worker when the index is full.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np

from trioproxy.cache.vector_index import HnswCore


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=100_000)
    p.add_argument("--namespaces", type=int, default=10)
    args = p.parse_args()
    n, spaces = args.prompts, args.namespaces
    rng = np.random.default_rng(0)
    core = HnswCore(dim=384, max_per_namespace=n, max_total=n)
    gc.collect()
    base = rss_mb()
    t0 = time.perf_counter()
    expires = time.time() + 3600
    for start in range(0, n, 1_000):
        vecs = rng.standard_normal((min(1_000, n - start), 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        core.add_many([
            (f"ns{(start + i) % spaces}", f"e{start + i}", v,
             f"what is prompt number {start + i:>7} about, the weather in a city today?", expires)
            for i, v in enumerate(vecs)
        ])  # fmt: skip
    built = time.perf_counter() - t0
    gc.collect()
    grown = rss_mb() - base
    print(f"{n:,} prompts in {spaces} namespaces: +{grown:.0f} MB RSS, "
          f"{grown * 1024 / n:.2f} KB a prompt (built in {built:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
