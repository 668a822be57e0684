"""Cost of the Redis budget state's epoch and rebuild (issue 10 item 6).

``rebuild``: a SQLite ledger with ``--records`` request records over the current month
(``--teams`` teams, ``--users`` users with a 1 h token window; the last hour's share are raw
records the rebuild reads one by one), an empty non-persistent redis-server, then one
rebuild (`Recovery`) timed: wall time from detection to the epoch written (admissions
meet the outage policy meanwhile), gateway CPU and redis-server CPU.

``admission``: CPU per admission + settle through ``BudgetGate`` on Redis for a team
*without* limits (it still claims its day and month counters, so a limit set later is
exact from the next admission on): gateway process CPU and redis-server CPU per request,
beside the same loop on an in-process MemoryStore (the gate's own work: the floor if
teams without limits skipped the store). ``--records 0`` runs only these rows.
Process CPU, not wall time, so the numbers hold on a shared box.

    .venv/bin/python loadtest/budget_rebuild_bench.py [--records 1000000] [--teams 1000]
        [--users 2000] [--ops 20000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures_servers import RedisServer
from trioproxy.budget.gate import BudgetGate, OutagePolicy
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.periods import period_at
from trioproxy.budget.rebuild import HOUR, rebuild, span
from trioproxy.budget.recovery import RECENT_S, Recovery
from trioproxy.budget.redis_store import RedisStore
from trioproxy.budget.store import BudgetStore
from trioproxy.config.model import BudgetsConfig, UserWindow
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spend import LedgerSpend
from trioproxy.ledger.sqlite import SqliteLedger
from trioproxy.store.redis_client import RedisClient

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (redis-server)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def fill(ledger: SqliteLedger, n: int, teams: int, users: int, now: float) -> int:
    """``n`` request records from the month's start to ``now``; returns the last hour's."""
    month = period_at("month", now, ZoneInfo("UTC"))
    rng = random.Random(1)
    batch: list[UsageRecord] = []
    recent = 0
    for i in range(n):
        ts = rng.uniform(month.start, now)
        recent += ts >= now - 3600
        batch.append(UsageRecord(
            ts=ts, request_id=f"r{i}", kind="request", key_name="k", team=f"t{rng.randrange(teams)}",
            user=f"u{rng.randrange(users)}", feature="f", route="r", target="m",
            input_tokens=rng.randrange(1, 500), output_tokens=rng.randrange(1, 500),
            cost_micros=rng.randrange(1, 20_000),
        ))  # fmt: skip
        if len(batch) == 5_000:
            await ledger.write_batch(batch)
            batch = []
    await ledger.write_batch(batch)
    return recent


async def phases(ledger: SqliteLedger, cfg: BudgetsConfig, now: float) -> None:
    """The rebuild's reads and maths, each timed (wall, this process's CPU)."""
    tz = ZoneInfo(cfg.timezone)
    at = span(now, tz, cfg.users, lease_s=900.0, recent_s=RECENT_S)
    source = LedgerSpend(ledger)
    marks = [(time.perf_counter(), time.process_time())]
    teams = await source.hours(at.first_hour, at.split // HOUR, by="team")
    marks.append((time.perf_counter(), time.process_time()))
    users = await source.hours(at.window_first_hour, at.split // HOUR, by="user")
    marks.append((time.perf_counter(), time.process_time()))
    requests = await source.requests([(at.split, now + 86_400), *at.fragments])
    marks.append((time.perf_counter(), time.process_time()))
    rebuild(now, tz, cfg.users, at, teams, users, requests)
    marks.append((time.perf_counter(), time.process_time()))
    names = (f"roll-up per team ({len(teams):,} rows)", f"per user ({len(users):,} rows)",
             f"raw read ({len(requests):,} rows)", "maths")  # fmt: skip
    for name, (w0, c0), (w1, c1) in zip(names, marks, marks[1:], strict=False):
        print(f"  {name}: {w1 - w0:.2f} s wall, {c1 - c0:.2f} s CPU")


async def rebuild_row(args: argparse.Namespace, server: RedisServer, tmp: Path) -> None:
    now = time.time()
    ledger = await SqliteLedger.open(tmp / "ledger.sqlite3")
    t0 = time.perf_counter()
    recent = await fill(ledger, args.records, args.teams, args.users, now)
    print(f"ledger: {args.records:,} records ({recent:,} in the last hour) written in "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    cfg = BudgetsConfig(users={"*": UserWindow("*", tokens=10**9, window_s=3600)})
    await phases(ledger, cfg, now)
    async with trio.open_nursery() as nursery:
        client = RedisClient(server.url, call_timeout=30.0)
        await nursery.start(client.run)
        store = RedisStore(client)
        rec = Recovery(store, cfg, lambda: LedgerSpend(ledger), lease_s=900.0,
                       call_timeout_s=30.0)  # fmt: skip
        assert server.proc is not None
        cpu0, srv0, wall0 = time.process_time(), server_cpu(server.proc.pid), time.perf_counter()
        await nursery.start(rec.run)  # an empty Redis: rebuilt (start-up waits <= 10 s)
        await rec.wait_restored()
        wall = time.perf_counter() - wall0
        cpu, srv = time.process_time() - cpu0, server_cpu(server.proc.pid) - srv0
        s = rec.stats
        assert s.rebuilds == 1, s
        print(f"rebuild: {args.teams} teams, {args.users} users, {args.records:,} records: "
              f"{wall:.2f} s wall (admission unavailable), gateway CPU {cpu:.2f} s, "
              f"redis CPU {srv:.2f} s; wrote {s.last_counters} counters, {s.last_windows} "
              f"window entries, {s.last_counted} counted ids")  # fmt: skip
        nursery.cancel_scope.cancel()
    await ledger.aclose()


async def admission_row(args: argparse.Namespace, server: RedisServer, redis: bool) -> None:
    cfg = BudgetsConfig()  # no limits at all: the counters are still claimed
    async with trio.open_nursery() as nursery:
        client = RedisClient(server.url, call_timeout=30.0)
        await nursery.start(client.run)
        store: BudgetStore = MemoryStore()  # the floor: the gate's own work, no store call
        if redis:
            store = RedisStore(client, prefix="adm:")
            await store.initialise()
        gate = BudgetGate(cfg, store, outage=OutagePolicy(call_timeout_s=30.0))
        per_task = args.ops // args.concurrency

        async def worker(w: int) -> None:
            for i in range(per_task):
                ticket = await gate.admit(
                    request_id=f"{w}-{i}", team=f"t{w % 10}", user="u", end_user=None,
                    worst_case_usd_micros=5_000, worst_case_tokens=1_000,
                )  # fmt: skip
                await gate.settle(ticket, 2_000, 400)

        assert server.proc is not None
        cpu0, srv0, wall0 = time.process_time(), server_cpu(server.proc.pid), time.perf_counter()
        async with trio.open_nursery() as inner:
            for w in range(args.concurrency):
                inner.start_soon(worker, w)
        n = per_task * args.concurrency
        wall = time.perf_counter() - wall0
        cpu, srv = time.process_time() - cpu0, server_cpu(server.proc.pid) - srv0
        print(f"admission+settle on {'redis' if redis else 'a memory store'}, team without "
              f"limits, {args.concurrency} concurrent: {n:,} in "
              f"{wall:.1f} s; gateway CPU {cpu / n * 1e6:.0f} µs, redis CPU {srv / n * 1e6:.0f} µs "
              f"per request")  # fmt: skip
        nursery.cancel_scope.cancel()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            with trio.fail_after(args.deadline):
                await admission_row(args, server, redis=False)
                await admission_row(args, server, redis=True)
                if args.records:
                    await rebuild_row(args, server, Path(tmp))
        finally:
            server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--teams", type=int, default=1_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole run")
    trio.run(main, ap.parse_args())
