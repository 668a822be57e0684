"""Budget admission cost per request through the gateway (issue 3).

One simulator (30-token answers, no delay) behind ``trioproxy serve -w 1``; wrk
POSTs the same non-stream chat request (model ``gpt-4o-mini``, no cache) with
``--conns`` keep-alive connections. Configurations:

* ``off``: no ``[budgets]`` at all (the gate finds no budget: no store round trip).
* ``on``: team ``bench`` with daily/monthly USD limits that never deny, and every
  user (``"*"``) a token window: each request reserves 3 buckets before going upstream
  and settles them after.

each on the embedded store (SQLite WAL in ``state_dir``) and on Redis (a throwaway
redis-server; ``storage.redis_url``). The ledger is always on (SQLite in ``state_dir``,
one request record and one attempt record per request) in every configuration, so
``on - off`` is admission alone. Per row: req/s, p50/p99 (wrk), gateway CPU ms/req,
machine busy % and the share of it that was other people's load; at the end the
ledger's request records are counted against what wrk sent, and denials (non-2xx).

    .venv/bin/python loadtest/budget_overhead.py [--seconds 10] [--conns 1 100 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

import common
from cache_latency import stop_gateway
from common import Server

sys.path.insert(0, str(common.ROOT))

MODEL = "gpt-4o-mini"
WARMUP_S = 3.0
BUDGETS = """
[budgets.teams.bench]
daily_usd = 1000000.0
monthly_usd = 10000000.0
[budgets.users."*"]
tokens = 1000000000000
window_s = 3600
"""


def config(wd: Path, sim: Server, *, budgets: bool, redis_url: str | None) -> Path:
    path = common.write_config(wd, {MODEL: sim.url})
    text = path.read_text()
    if redis_url:
        text = text.replace("[storage]\n", f'[storage]\nredis_url = "{redis_url}"\n', 1)
    path.write_text(text + (BUDGETS if budgets else ""))
    return path


def measure(gw: Server, sim: Server, wd: Path, conns: int, seconds: float) -> dict[str, Any]:
    url = gw.url + "/v1/chat/completions"
    common.wrk(url, MODEL, wd, conns=conns, seconds=WARMUP_S)
    common.wait_quiet()
    with common.Meter({"gateway": gw.pgid, "sim": sim.pgid}) as m:
        r = common.wrk(url, MODEL, wd, conns=conns, seconds=seconds)
    return {
        "conns": conns,
        "rps": r.rps,
        "p50": r.p50,
        "p99": r.p99,
        "requests": r.requests,
        "err": r.errors + r.non2xx,
        "cpu_ms": 1000 * m.cpu["gateway"] / max(1, r.requests),
        "busy": m.busy_pct,
        "foreign": m.foreign_pct,
    }


def ledger_requests(state: Path) -> int:
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        (n,) = db.execute("SELECT count(*) FROM ledger_raw WHERE kind = 'request'").fetchone()
    return int(n)


def run_config(
    name: str, sim: Server, root: Path, conns: list[int], seconds: float, redis_url: str | None
) -> list[dict[str, Any]]:
    wd = root / name.replace(" ", "-")
    wd.mkdir()
    cfg = config(wd, sim, budgets=name.startswith("on"), redis_url=redis_url)
    gw = common.start_gateway(wd, cfg, 1)
    rows = []
    try:
        for c in conns:
            rows.append({"config": name, **measure(gw, sim, wd, c, seconds)})
    finally:
        stop_gateway(gw)
    recorded = ledger_requests(wd / "state")
    print(f"{name}: ledger request records {recorded} (wrk counts exclude in-flight at stop)")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--conns", type=int, nargs="+", default=[1, 100, 1000])
    p.add_argument("--stores", nargs="+", default=["embedded", "redis"])
    args = p.parse_args()
    from tests.fixtures_servers import RedisServer

    root = common.workdir()
    sim = common.start_simulator(root)
    redis = RedisServer(root)
    rows: list[dict[str, Any]] = []
    try:
        redis.start()
        for store in args.stores:
            url = redis.url if store == "redis" else None
            for mode in ("off", "on"):
                rows += run_config(f"{mode} {store}", sim, root, args.conns, args.seconds, url)
    finally:
        redis.stop()
        sim.stop()
    print(
        "| config | conns | req/s | p50 ms | p99 ms | non-2xx+err | gw CPU ms/req "
        "| busy % | foreign % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['conns']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['err']} | {r['cpu_ms']:.2f} | {r['busy']:.0f} | {r['foreign']:.0f} |"
        )
    print("\nadmission (on - off, same store), ms and CPU ms/req:")
    base = {(r["config"].split()[1], r["conns"]): r for r in rows if r["config"].startswith("off")}
    for r in rows:
        if r["config"].startswith("on"):
            b = base[(r["config"].split()[1], r["conns"])]
            print(
                f"  {r['config']} c={r['conns']}: p50 {r['p50'] - b['p50']:+.2f}  "
                f"p99 {r['p99'] - b['p99']:+.2f}  req/s {r['rps'] - b['rps']:+,.0f}  "
                f"CPU {r['cpu_ms'] - b['cpu_ms']:+.2f}"
            )
    print(f"\nworkdir {root}")


if __name__ == "__main__":
    main()
