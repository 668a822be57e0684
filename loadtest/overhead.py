"""Gateway overhead, non-stream: throughput, CPU per request, added latency.

One simulator (30-token answers, no delay); wrk POSTs the same chat request
with 100 keep-alive connections, first straight at the simulator, then through
``trioproxy serve --workers N``. Every measured run is preceded by a warm-up
and waits for the machine to be quiet first. Per row: req/s, latency p50/p90/p99
(wrk), server-group CPU ms per request (from /proc), machine busy % and the
share of it that was other people's load ("foreign").

Added latency = gateway minus direct, under the same client. At 100 connections
a closed loop is saturated, so its latency is mostly queueing (Little's law);
the ``-c 1`` rows give the unloaded per-request path.

    .venv/bin/python loadtest/overhead.py [--seconds 15] [--conns 100] [--workers 1 2]
        [--profile DIR]   # also py-spy the worker (-w 1) under load; writes DIR/*.txt
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common
from common import Server

WARMUP_S = 3.0
MODEL = "gpt-4o-mini"


def measure(
    server: Server, sim: Server, wd: Path, *, conns: int, seconds: float, path: str = ""
) -> dict[str, Any]:
    """wrk against ``server`` after a warm-up; CPU of ``server``'s and ``sim``'s groups."""
    url = server.url + (path or "/v1/chat/completions")
    common.wrk(url, MODEL, wd, conns=conns, seconds=WARMUP_S)
    common.wait_quiet()
    pgids = {"server": server.pgid} if server is sim else {"server": server.pgid, "sim": sim.pgid}
    with common.Meter(pgids) as m:
        r = common.wrk(url, MODEL, wd, conns=conns, seconds=seconds)
    assert r.requests, f"no responses from {url}"
    return {
        "conns": conns,
        "rps": r.rps,
        "p50": r.p50,
        "p90": r.p90,
        "p99": r.p99,
        "err": r.errors + r.non2xx,
        "cpu_ms": 1000 * m.cpu["server"] / r.requests,
        "sim_ms": 1000 * m.cpu.get("sim", m.cpu["server"]) / r.requests,
        "rss": m.peak_rss_mb.get("server", 0.0),
        "busy": m.busy_pct,
        "foreign": m.foreign_pct,
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        "| server | conns | req/s | p50 ms | p90 ms | p99 ms | errors | server CPU ms/req "
        "| sim CPU ms/req | peak RSS MB | busy % | foreign % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['server']} | {r['conns']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p90']:.2f} "
            f"| {r['p99']:.2f} | {r['err']} | {r['cpu_ms']:.2f} | {r['sim_ms']:.2f} "
            f"| {r['rss']:.0f} | {r['busy']:.0f} | {r['foreign']:.0f} |"
        )


def busiest_pid(pgid: int) -> int:
    """The process of a group that used the most CPU so far (the hypercorn worker)."""
    return max(common.group_pids(pgid), key=common.pid_cpu)


_LINE = re.compile(r":\d+\)$")
_OURS = {p.name for p in (common.ROOT / "trioproxy").iterdir() if not p.name.startswith("_")}
_THIRD_PARTY = ("h11", "httpcore2", "httpx2", "hypercorn", "trio", "outcome", "orjson", "sniffio")


def _package(frame: str) -> str:
    """``func (trio/_core/_run.py:12)`` (py-spy's short path) -> its owner: trio, h11, ..."""
    path = frame.rsplit("(", 1)[-1]
    head = path.split("/", 1)[0] if "/" in path else path.split(":", 1)[0]
    if head in _OURS:
        return "trioproxy"
    if head in _THIRD_PARTY:
        return head
    return "stdlib/other"


def summarize_profile(collapsed: Path, top: int = 25) -> str:
    """Self time by function and by package, inclusive time of selected frames."""
    own: Counter[str] = Counter()
    by_pkg: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        n = int(count)
        total += n
        leaf = frames[-1]
        own[leaf] += n
        by_pkg[_package(leaf)] += n
        for f in set(frames):
            incl[f] += n
    out = [f"samples: {total}", "", "self time by package:"]
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in by_pkg.most_common()]
    out += ["", f"self time, top {top} functions:"]
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in own.most_common(top)]
    out += ["", f"inclusive time, top {top} trioproxy/h11/httpx2/httpcore2 frames:"]
    keep = [(k, n) for k, n in incl.most_common() if _package(k) != "stdlib/other"]
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in keep[:top]]
    return "\n".join(out)


def profile(gw: Server, wd: Path, out_dir: Path, seconds: float, conns: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    url = gw.url + "/v1/chat/completions"
    common.wrk(url, MODEL, wd, conns=conns, seconds=WARMUP_S)
    pid = busiest_pid(gw.pgid)
    raw = out_dir / "profile.collapsed"
    argv = [str(common.VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "100"]
    argv += ["--duration", str(int(seconds)), "--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        common.wrk(url, MODEL, wd, conns=conns, seconds=seconds)
    finally:
        spy.wait(timeout=seconds + 30)
    text = summarize_profile(raw)
    (out_dir / "profile.txt").write_text(text + "\n")
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--profile", type=Path, help="py-spy the -w 1 worker, write here")
    args = p.parse_args()
    wd = common.workdir()
    sim = common.start_simulator(wd)
    rows: list[dict[str, Any]] = []
    try:
        config = common.write_config(wd, {MODEL: sim.url})
        for conns in (args.conns, 1):
            row = measure(sim, sim, wd, conns=conns, seconds=args.seconds)
            rows.append({"server": "direct to simulator", **row})
        for workers in args.workers:
            gw = common.start_gateway(wd, config, workers)
            try:
                for conns in (args.conns, 1):
                    row = measure(gw, sim, wd, conns=conns, seconds=args.seconds)
                    rows.append({"server": f"trioproxy -w {workers}", **row})
                if args.profile and workers == 1:
                    profile(gw, wd, args.profile, args.seconds, args.conns)
            finally:
                gw.stop()
    finally:
        sim.stop()
    print_rows(rows)
    direct = {r["conns"]: r for r in rows if r["server"] == "direct to simulator"}
    print("\nadded latency (gateway - direct), ms:")
    for r in rows:
        if r["server"].startswith("trioproxy"):
            d = direct[r["conns"]]
            print(
                f"  {r['server']} c={r['conns']}: p50 +{r['p50'] - d['p50']:.2f}"
                f"  p99 +{r['p99'] - d['p99']:.2f}"
            )


if __name__ == "__main__":
    main()
