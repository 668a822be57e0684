"""What a request costs the SQLite stores as they grow, by request-id form (bounded: about a
minute per million rows).

    .venv/bin/python loadtest/ledger_growth.py [--rows 2000000] [--ids random gateway]
        [--stores ledger budget] [--dir DIR]

The ledger's unique key ``(request_id, kind, attempt, target)`` and the budget store's
reservations (keyed by the request id) are B-trees. The ledger keeps raw rows for
``retention_days`` and the budget store keeps closed reservations two days, so on a busy
gateway both hold millions of rows. For each id form, a fresh store is filled the way the
gateway fills it, and the cost per row is printed eight times on the way:

* ``ledger``: ``SqliteLedger.write_batch`` of 500 records (a request record and an attempt
  record per request id, as a served request writes).
* ``budget``: a reservation and its settle per request id through ``SqliteStore`` (its group
  commit, 500 concurrent callers, one team-day claim as ``dataplane.py``'s config; with
  ``--end-users N`` also an hour window of one of N end users, round robin).

* ``retention`` (not by default): a ledger of ``--rows`` rows over two days, then the
  retention round that removes the older day (``SqliteLedger.enforce_retention``, called
  until it says nothing is left, as the writer does): calls, total and longest call, and the
  WAL it left.
* ``page`` (not by default): a ledger of ``--rows`` records over the last day, then the
  Requests page's query for that day filtered by a rare key, a failed status, a busy key and
  nothing; and what writing the records cost.

Printed per record (ledger) or request (budget), over the last 20 batches or rounds of 500:
wall time and the process's CPU time (every thread: the stores work in worker threads).

Id forms: ``random`` is the form before time-ordered ids (``req_`` + 96 random bits);
``gateway`` is :func:`trioproxy.core.ids.request_id` (the millisecond, then 80 random bits).
The two forms run one after the other per store; compare them within one run of this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_ledger_helpers import make_records
from trioproxy.budget.claims import Claim
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.core.ids import request_id
from trioproxy.ledger.recent import Filters
from trioproxy.ledger.sqlite import SqliteLedger

BATCH = 500
REPORTS = 8


def random_id() -> str:
    return "req_" + os.urandom(12).hex()


ID_FORMS: dict[str, Callable[[], str]] = {"random": random_id, "gateway": request_id}


def report(store: str, form: str, rows: int, recent: list[tuple[float, float]], per: int) -> None:
    tail = recent[-20:]
    wall = 1e6 * sum(w for w, _ in tail) / len(tail) / per
    cpu = 1e6 * sum(c for _, c in tail) / len(tail) / per
    unit = "record" if store == "ledger" else "request"
    print(f"  {store:6} {form:8} rows {rows:>10,}: {wall:6.1f} µs wall, {cpu:6.1f} µs CPU "
          f"per {unit}", flush=True)  # fmt: skip


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


async def fill_ledger(path: Path, form: str, rows: int) -> None:
    ledger = await SqliteLedger.open(path)
    template = [r for r in make_records(4 * BATCH, seed=3) if r.kind == "request"][: BATCH // 2]
    make = ID_FORMS[form]
    done, times = 0, []  # (wall, cpu) per batch
    while done < rows:
        batch = []
        for r in template:
            rid, now = make(), time.time()
            batch.append(dataclasses.replace(r, request_id=rid, ts=now))
            batch.append(dataclasses.replace(r, request_id=rid, ts=now, kind="attempt"))
        t0 = clocks()
        await ledger.write_batch(batch)
        times.append(since(t0))
        done += len(batch)
        if done % (rows // REPORTS) < len(batch):
            report("ledger", form, done, times, len(batch))


async def fill_budget(path: Path, form: str, rows: int, end_users: int) -> None:
    store = SqliteStore(str(path))
    make = ID_FORMS[form]
    team = Claim("team:bench:day", 1_000, 10**15, expires_at=time.time() + 86_400)
    asked = 0

    async def one() -> None:
        nonlocal asked
        rid, now = make(), time.time()
        claims, actual = [team], {"team:bench:day": 700}
        if end_users:  # one end user's hour window too, round robin
            user = f"enduser:bench:u{asked % end_users}"
            claims.append(Claim(user, 100, 10**12, 3600.0))
            actual[user] = 70
        asked += 1
        if await store.reserve(rid, claims, now=now, lease_s=300.0) is not None:
            raise RuntimeError("denied")
        await store.settle(rid, actual, now=now)

    done, times = 0, []  # (wall, cpu) per batch
    while done < rows:
        t0 = clocks()
        async with trio.open_nursery() as nursery:
            for _ in range(BATCH):
                nursery.start_soon(one)
        times.append(since(t0))
        done += BATCH
        if done % (rows // REPORTS) < BATCH:
            report("budget", form, done, times, BATCH)
    store.close()


async def retention(path: Path, rows: int) -> None:
    """``--stores retention``: ``rows`` raw rows spread over the two days before yesterday, then
    one retention round keeping two days (the older day goes), as the writer runs it."""
    ledger = await SqliteLedger.open(path)
    template = [r for r in make_records(4 * BATCH, seed=3) if r.kind == "request"][: BATCH // 2]
    start, span = time.time() - 3 * 86_400, 2 * 86_400
    done = 0
    while done < rows:
        batch = []
        for r in template:
            rid, ts = request_id(), start + done / rows * span
            batch.append(dataclasses.replace(r, request_id=rid, ts=ts))
            batch.append(dataclasses.replace(r, request_id=rid, ts=ts, kind="attempt"))
        await ledger.write_batch(batch)
        done += len(batch)
    began, removed, calls, longest, more = time.perf_counter(), 0, 0, 0.0, True
    while more:
        t0 = time.perf_counter()
        n, more = await ledger.enforce_retention(now=time.time(), retention_days=2)
        longest = max(longest, time.perf_counter() - t0)
        removed, calls = removed + n, calls + 1
    wal = (await trio.Path(f"{path}-wal").stat()).st_size
    print(f"  retention: {removed:,} of {rows:,} rows removed in {calls} calls, "
          f"{time.perf_counter() - began:.2f} s in all, longest call {1e3 * longest:.1f} ms, "
          f"WAL {wal / 1e6:.1f} MB", flush=True)  # fmt: skip
    await ledger.aclose()


async def requests_page(path: Path, rows: int) -> None:
    """``--stores page``: ``rows`` records over the last 24 hours (20 busy keys, one key on 1 in
    50,000 requests, 1 in 1,000 failed with a 500), then the Requests page's query for a day,
    filtered as a team lead would (best of 3)."""
    ledger = await SqliteLedger.open(path)
    template = [r for r in make_records(4 * BATCH, seed=3) if r.kind == "request"][: BATCH // 2]
    now = time.time()
    rng, done, cpu = random.Random(1), 0, 0.0
    while done < rows:
        batch = []
        for r in template:
            ts, rid = now - 86_000 + done / rows * 86_000, request_id()
            key = "rare" if rng.random() < 0.00002 else f"k{rng.randrange(20)}"
            status = 500 if rng.random() < 0.001 else 200
            batch.append(dataclasses.replace(r, request_id=rid, ts=ts, key_name=key,
                                             status=status))  # fmt: skip
            batch.append(dataclasses.replace(r, request_id=rid, ts=ts, kind="attempt",
                                             key_name=key))  # fmt: skip
        t0 = time.process_time()
        await ledger.write_batch(batch)
        cpu += time.process_time() - t0
        done += len(batch)
    print(f"  page: writing {1e6 * cpu / done:.1f} µs CPU per record ({done:,} records)")
    for name, filters in [("rare key", Filters(key="rare")), ("status 500", Filters(status=500)),
                          ("busy key", Filters(key="k3")), ("no filter", Filters())]:  # fmt: skip
        best, found = float("inf"), 0
        for _ in range(3):
            t0 = time.perf_counter()
            page, _ = await ledger.recent_requests(filters, cursor=None, limit=51,
                                                   since=now - 86_400, until=now + 1)  # fmt: skip
            best, found = min(best, time.perf_counter() - t0), len(page)
        print(f"  page: {name:10} {found:3} rows in {1e3 * best:7.1f} ms", flush=True)
    await ledger.aclose()


async def main(args: argparse.Namespace, where: Path) -> None:
    for store in args.stores:
        if store == "retention":
            await retention(where / "ledger-retention.sqlite3", args.rows)
            continue
        if store == "page":
            await requests_page(where / "ledger-page.sqlite3", args.rows)
            continue
        for form in args.ids:
            if store == "ledger":
                await fill_ledger(where / f"ledger-{form}.sqlite3", form, args.rows)
            else:
                await fill_budget(where / f"budget-{form}.sqlite3", form, args.rows, args.end_users)


def cli() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--ids", nargs="+", choices=list(ID_FORMS), default=list(ID_FORMS))
    ap.add_argument("--stores", nargs="+", choices=["ledger", "budget", "retention", "page"],
                    default=["ledger", "budget"])  # fmt: skip
    ap.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    ap.add_argument("--end-users", type=int, default=0,
                    help="budget: each request also takes an hour window of one of this many "
                    "end users (round robin), as end_user_budgets does")  # fmt: skip
    args = ap.parse_args()
    where = Path(tempfile.mkdtemp(prefix="tp-growth-", dir=args.dir))
    print(f"files in {where} (removed at the end)")
    try:
        trio.run(main, args, where)
    finally:
        shutil.rmtree(where)


if __name__ == "__main__":
    cli()
