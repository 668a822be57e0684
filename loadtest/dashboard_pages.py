"""Dashboard page render time with a 1,000,000-record ledger, and what viewing costs the proxy.

1. **Fill**: ``--records`` ledger records (default 1,000,000: requests, each with one attempt
   record and one in ten with a second, fallback or hedge) over the last 30 days, 20 teams x
   25 users, 200 keys, 30 features, 8 routes, 10 models, a few % refusals and errors; written
   through the real backend (``SqliteLedger.write_batch``, 20,000 a batch: raw rows and every
   roll-up) in time order, as a gateway writes them. Kept in ``--state`` for the next run
   (``--refill`` to redo).
2. **Pages**: ``trioproxy serve`` on that state directory (budgets in America/New_York, so
   local days are not UTC days); every page fetched ``--rounds`` times in turn over one
   keep-alive connection with an admin key: wall-clock p50/p95 per page and the gateway's CPU
   ms per page (robust to other people's load, which is printed as ``foreign``).
3. **Proxy**: wrk against the data port (``--conns`` connections, ``--seconds`` each; a
   closed-loop Trio client of the same shape when ``wrk`` is not installed) with no
   dashboard viewer, with two open live tabs (the overview and providers panels every 5 s, as
   htmx polls them), and with a viewer that fetches every page each ``--poll-s`` seconds (far
   busier than any person); ``--runs`` times, interleaved: req/s, p50/p99, the data plane's
   CPU µs per proxied request (read from each data-plane process's own counters in
   ``/proc/<pid>/stat``: the worker processes of ``serve``, or the one process serving both
   planes before the control plane had its own), the control plane's CPU, and the load
   average. ``--commit`` runs another commit's code (``main`` for the before).

    .venv/bin/python loadtest/dashboard_pages.py [--records 1000000] [--rounds 40]
        [--state /tmp/tp-dash-bench] [--seconds 15] [--conns 32] [--poll-s 1] [--skip-proxy]
        [--skip-pages] [--commit HEAD] [--runs 2] [--only-viewer]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import common
import trio
from cache_latency import stop_gateway

sys.path.insert(0, str(common.ROOT))

from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.sqlite import SqliteLedger

ZONE = "America/New_York"
MODEL = "gpt-4o-mini"
ADMIN_KEY = "tp-bench-admin-key"
TEAMS = [f"team-{i:02d}" for i in range(20)]
MODELS = [f"model-{i}" for i in range(9)] + [MODEL]
ROUTES = [f"route-{i}" for i in range(8)]
FEATURES = [f"feature-{i:02d}" for i in range(30)]
DAYS = 30
BATCH = 20_000
PAGES = [
    "/", "/budgets", *(f"/spend?by={d}" for d in ("team", "feature", "user", "key", "model",
                                                   "route")),
    "/spend.csv?by=user", "/requests", "/requests?team=team-03", "/requests?status=502",
    "/requests?key=key-017&window=7d", "/providers", "/panel/providers", "/cache", "/keys",
    "/audit", "/alerts",
]  # fmt: skip


def records(n: int, now: float, seed: int = 1) -> list[UsageRecord]:
    rng = random.Random(seed)
    out: list[UsageRecord] = []
    i = 0
    span = DAYS * 86_400
    while len(out) < n:
        t = rng.randrange(len(TEAMS))
        user = f"user-{t:02d}-{rng.randrange(25):02d}"
        key = f"key-{t * 10 + rng.randrange(10):03d}"
        ts = now - rng.random() * span
        status = rng.choices((200, 429, 502, 499, 400), (94, 3, 1.5, 1, 0.5))[0]
        model = rng.choice(MODELS)
        inp, outp = rng.randint(20, 4000), rng.randint(0, 800)
        cost = inp * 3 + outp * 12 if status == 200 else 0
        cache = rng.choices(("off", "miss", "exact", "semantic"), (60, 30, 7, 3))[0]
        base = dict(
            request_id=f"req-{seed}-{i}", key_name=key, team=TEAMS[t], user=user,
            feature=rng.choice(FEATURES), route=rng.choice(ROUTES), provider="p",
            provider_model=model, input_tokens=inp, output_tokens=outp,
        )  # fmt: skip
        latency = rng.lognormvariate(6.2, 0.6)
        ttfb = latency * rng.uniform(0.1, 0.5)
        second = rng.random() < 0.1
        out.append(UsageRecord(
            ts=ts, kind="request", target=model, cost_micros=cost, latency_ms=latency,
            ttfb_ms=ttfb, cache=cache, status=status, stream=rng.random() < 0.5,
            error_kind={429: "budget_exceeded", 502: "upstream_unavailable",
                        400: "invalid_request"}.get(status),
            fallback_depth=1 if second else 0, **base,  # type: ignore[arg-type]
        ))  # fmt: skip
        roles = [("primary", "lost" if second else "won")]
        if second:
            roles.append((rng.choice(("fallback", "hedge")), "won"))
        for a, (role, outcome) in enumerate(roles):
            failed = role == "primary" and second and rng.random() < 0.7
            out.append(UsageRecord(
                ts=ts + a * 0.2, kind="attempt", attempt=a, target=rng.choice(MODELS),
                cost_micros=cost if outcome == "won" else 0, latency_ms=latency,
                ttfb_ms=None if failed else ttfb, status=502 if failed else 200,
                error_kind="upstream_timeout" if failed else None, hedge_role=role,  # type: ignore[arg-type]
                outcome="failed" if failed else outcome, **base,  # type: ignore[arg-type]
            ))  # fmt: skip
        i += 1
    return out[:n]


async def fill(path: Path, n: int) -> float:
    """Write ``n`` records through the backend; returns records per second."""
    backend = await SqliteLedger.open(path, zone=ZONE)
    t0 = time.perf_counter()
    now = time.time()
    try:
        done = 0
        batch = sorted(records(n, now), key=lambda r: r.ts)  # in time order, as they come
        for j in range(0, len(batch), BATCH):
            done += await backend.write_batch(batch[j : j + BATCH])
            if done % 200_000 == 0:
                print(f"  filled {done:,} records", flush=True)
    finally:
        await backend.aclose()
    return n / (time.perf_counter() - t0)


async def opened(path: Path) -> None:
    await (await SqliteLedger.open(path, zone=ZONE)).aclose()


def config(wd: Path, sim: common.Server) -> Path:
    path = common.write_config(wd, {m: sim.url for m in MODELS})
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    lines = ["[[api_keys]]", 'name = "admin"', f'key_sha256 = "{digest}"', 'team = "ops"',
             "admin = true"]  # fmt: skip
    for k in range(len(TEAMS) * 10):  # the keys the records name, 10 per team
        key_hash = hashlib.sha256(f"tp-bench-{k}".encode()).hexdigest()
        lines += ["[[api_keys]]", f'name = "key-{k:03d}"', f'key_sha256 = "{key_hash}"',
                  f'team = "{TEAMS[k // 10]}"']  # fmt: skip
    lines += ["[budgets]", f'timezone = "{ZONE}"']
    for t in TEAMS:
        lines += [f"[budgets.teams.{t}]", "daily_usd = 500.0", "monthly_usd = 10000.0"]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    return path


class Client:
    """One keep-alive connection to the admin port, with the admin key."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def get(self, path: str) -> tuple[int, int]:
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        return r.status, len(r.read())


def time_pages(admin: str, gw: common.Server, rounds: int) -> list[dict[str, object]]:
    client = Client(admin)
    rows = []
    for page in PAGES:
        status, size = client.get(page)  # warm (and: does it exist?)
        if status == 404:
            print(f"  {page}: 404, skipped", flush=True)
            continue
        assert status == 200, (page, status)
        walls = []
        with common.Meter({"gateway": gw.pgid}) as meter:
            for _ in range(rounds):
                t0 = time.perf_counter()
                status, _ = client.get(page)
                walls.append((time.perf_counter() - t0) * 1000)
                assert status == 200, (page, status)
        row = {
            "page": page, "bytes": size, "p50_ms": round(common.percentile(walls, 50), 1),
            "p95_ms": round(common.percentile(walls, 95), 1),
            "cpu_ms": round(meter.cpu["gateway"] * 1000 / rounds, 1),
            "foreign_pct": round(meter.foreign_pct),
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


TABS = ["/panel/overview", "/panel/providers"]
"""Two open tabs of live pages: what htmx polls every 5 s."""


def role_pids(root: int) -> dict[str, list[int]]:
    """The data-plane and control-plane processes of ``serve`` (pid ``root``): its children
    by command line; a ``serve`` without them (one worker, both planes in process) is its own
    data plane."""
    kids = []  # every thread's children: trio starts processes from worker threads
    for task in Path(f"/proc/{root}/task").glob("*/children"):
        try:
            kids += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    roles: dict[str, list[int]] = {"data": [], "control": []}
    for pid in kids:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"trioproxy.server.worker" in argv:
            roles["data"].append(pid)
        elif b"trioproxy.server.control" in argv:
            roles["control"].append(pid)
    if not roles["data"]:
        roles["data"] = [root]
    return roles


def cpu_of(pids: list[int]) -> float:
    return sum(common.pid_cpu(p) for p in pids)


def drive(port: int, conns: int, seconds: float) -> common.WrkResult:
    """wrk's run without wrk: ``conns`` keep-alive connections in a closed loop, POSTing the
    bench chat body (latencies in ms)."""
    from trioproxy.upstream.http1 import H1Connection, request_head

    body = common.CHAT_BODY % MODEL.encode()
    headers = (("authorization", f"Bearer {common.BENCH_KEY}"),
               ("content-type", "application/json"))  # fmt: skip
    lat: list[float] = []
    counts = {"non2xx": 0, "errors": 0}

    async def one(end: float) -> None:
        stream = await trio.open_tcp_stream(common.HOST, port)
        conn = H1Connection(stream, stream.socket)
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                head = request_head("POST", "/v1/chat/completions", f"{common.HOST}:{port}",
                                    headers, len(body))  # fmt: skip
                await conn.send_request(head, body)
                await conn.read_head()
                while await conn.receive():
                    pass
                lat.append((time.perf_counter() - t0) * 1000)
                if conn.status >= 300:
                    counts["non2xx"] += 1
        except (OSError, trio.BrokenResourceError, ValueError):
            counts["errors"] += 1
        finally:
            conn.close()

    async def run() -> float:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(conns):
                nursery.start_soon(one, t0 + seconds)
        return time.perf_counter() - t0

    took = trio.run(run)
    return common.WrkResult(
        requests=len(lat), seconds=took, errors=counts["errors"], non2xx=counts["non2xx"],
        p50=common.percentile(lat, 50), p90=common.percentile(lat, 90),
        p99=common.percentile(lat, 99), max=max(lat, default=0.0),
    )  # fmt: skip


def proxy_run(wd: Path, gw: common.Server, admin: str, args: argparse.Namespace,
              poll_s: float | None, pages: list[str] = PAGES) -> dict[str, object]:  # fmt: skip
    stop = threading.Event()
    polls = [0]

    def poller() -> None:
        client = Client(admin)
        while not stop.is_set():
            for page in pages:
                if client.get(page)[0] == 200:
                    polls[0] += 1
            stop.wait(poll_s)

    thread = threading.Thread(target=poller, daemon=True) if poll_s is not None else None
    roles = role_pids(gw.proc.pid)
    cpu0 = {r: cpu_of(p) for r, p in roles.items()}
    with common.Meter({"gateway": gw.pgid}) as meter:
        if thread is not None:
            thread.start()
        if shutil.which("wrk"):
            result = common.wrk(gw.url + "/v1/chat/completions", MODEL, wd, conns=args.conns,
                                seconds=args.seconds)  # fmt: skip
        else:
            result = drive(gw.port, args.conns, args.seconds)
        stop.set()
        if thread is not None:
            thread.join()
    cpu = {r: cpu_of(p) - cpu0[r] for r, p in roles.items()}
    n = max(1, result.requests)
    return {
        "viewer": "none" if poll_s is None else f"{len(pages)} pages each {poll_s:g} s",
        "page_views": polls[0], "rps": round(result.rps), "p50_ms": round(result.p50, 1),
        "p99_ms": round(result.p99, 1), "non2xx": result.non2xx,
        "data_plane_cpu_us_per_req": round(cpu["data"] * 1e6 / n),
        "control_plane_cpu_s": round(cpu["control"], 2),
        "gateway_cpu_us_per_req": round(meter.cpu["gateway"] * 1e6 / n),
        "foreign_pct": round(meter.foreign_pct), "loadavg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def wait_admin(admin: str) -> None:
    """The control plane may come up after the data port (its own process)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if Client(admin).get("/healthz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{admin} not serving")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--state", type=Path, default=Path("/tmp/tp-dash-bench"))
    ap.add_argument("--refill", action="store_true")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--poll-s", type=float, default=1.0)
    ap.add_argument("--skip-proxy", action="store_true")
    ap.add_argument("--skip-pages", action="store_true")
    ap.add_argument("--commit", default="HEAD", help="the trioproxy commit to run (main: before)")
    ap.add_argument("--runs", type=int, default=2, help="interleaved rounds of the proxy runs")
    ap.add_argument(
        "--only-viewer",
        action="store_true",
        help="proxy runs: no viewer and the every-page viewer only (no two tabs)",
    )
    args = ap.parse_args()
    wd = args.state
    db = wd / "state" / SQLITE_NAME
    marker = wd / f"filled-{args.records}"
    if args.refill or not marker.exists():
        for old in wd.glob("state/ledger.sqlite3*"):
            old.unlink()
        db.parent.mkdir(parents=True, exist_ok=True)
        rate = trio.run(fill, db, args.records)
        marker.write_text(f"{rate:.0f} records/s\n")
        print(f"fill: {args.records:,} records at {rate:,.0f} records/s "
              f"({db.stat().st_size / 1e6:.0f} MB)", flush=True)  # fmt: skip
    t0 = time.perf_counter()  # an older ledger gets its roll-ups rebuilt here, once
    trio.run(opened, db)
    print(f"ledger opened in {time.perf_counter() - t0:.1f} s", flush=True)
    sim = common.start_simulator(wd)
    gw = None
    try:
        gw = common.start_gateway(wd, config(wd, sim), commit=args.commit)
        admin = common.admin_url(wd / "bench.toml")
        wait_admin(admin)
        if not args.skip_pages:
            print(f"pages ({args.rounds} rounds each, {args.records:,} records):", flush=True)
            time_pages(admin, gw, args.rounds)
        if not args.skip_proxy:
            runs = [(None, PAGES), (5.0, TABS), (args.poll_s, PAGES)]
            if args.only_viewer:
                runs = [(None, PAGES), (args.poll_s, PAGES)]
            for poll, pages in runs * args.runs:
                print(json.dumps(proxy_run(wd, gw, admin, args, poll, pages)), flush=True)
    finally:
        if gw is not None:
            stop_gateway(gw)
        sim.stop()


if __name__ == "__main__":
    main()
