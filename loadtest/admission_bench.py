"""Admission latency of the budget gate: p50/p99 of ``BudgetGate.admit`` at 100
and 1,000 concurrent tasks, on the embedded SQLite store and on Redis.

Each task loops: admit (timed: the latency a request would add) then settle
(untimed). Every admission claims three buckets (team day, team month, the
user's token window). A throwaway redis-server is started on a free port and
killed at the end. Bounded: ``--ops`` admissions per row, ``--deadline`` s.

    .venv/bin/python loadtest/admission_bench.py [--ops 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures_servers import RedisServer
from trioproxy.budget.gate import BudgetGate, OutagePolicy
from trioproxy.budget.redis_store import RedisStore
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.budget.store import BudgetStore
from trioproxy.config.model import BudgetsConfig, TeamBudget, UserWindow
from trioproxy.store.redis_client import RedisClient

CONFIG = BudgetsConfig(
    teams={"t": TeamBudget("t", daily_usd=1e6, monthly_usd=1e7)},
    users={"*": UserWindow("*", tokens=10**12, window_s=3600)},
)


async def run_row(store: BudgetStore, concurrency: int, ops: int, deadline: float) -> list[float]:
    gate = BudgetGate(CONFIG, store, outage=OutagePolicy(call_timeout_s=30.0))
    await gate.team_limits("t")
    lat: list[float] = []
    per_task = max(1, ops // concurrency)

    async def worker(w: int) -> None:
        for i in range(per_task):
            t0 = time.perf_counter()
            ticket = await gate.admit(
                request_id=f"{concurrency}-{w}-{i}", team="t", user=f"u{w % 50}",
                end_user=None, worst_case_usd_micros=5_000, worst_case_tokens=1_000,
            )  # fmt: skip
            lat.append(time.perf_counter() - t0)
            await gate.settle(ticket, 2_000, 400)

    with trio.move_on_after(deadline):
        async with trio.open_nursery() as nursery:
            for w in range(concurrency):
                nursery.start_soon(worker, w)
    return lat


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


async def main(ops: int, deadline: float) -> None:
    rows: list[tuple[str, int, int, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            async with trio.open_nursery() as nursery:
                client = RedisClient(server.url, call_timeout=30.0)
                await nursery.start(client.run)
                for conc in (100, 1000):
                    stores: list[tuple[str, BudgetStore]] = [
                        ("sqlite", SqliteStore(str(Path(tmp) / f"b{conc}.db"))),
                        ("redis", RedisStore(client, prefix=f"bench{conc}:")),
                    ]
                    await stores[1][1].initialise()  # type: ignore[attr-defined]
                    for name, store in stores:
                        t0 = time.perf_counter()
                        lat = await run_row(store, conc, ops, deadline)
                        wall = time.perf_counter() - t0
                        rows.append((name, conc, len(lat), pct(lat, 0.5), pct(lat, 0.99),
                                     statistics.fmean(lat) * 1000, len(lat) / wall))  # fmt: skip
                nursery.cancel_scope.cancel()
        finally:
            server.stop()
    print(
        f"{'store':<8}{'conc':>6}{'admits':>8}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'admit+settle/s':>16}"
    )
    for name, conc, n, p50, p99, mean, rate in rows:
        print(f"{name:<8}{conc:>6}{n:>8}{p50:>9.2f}{p99:>9.2f}{mean:>9.2f}{rate:>16.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--deadline", type=float, default=30.0, help="seconds per row")
    args = ap.parse_args()
    trio.run(main, args.ops, args.deadline)
