"""Side by side in one run: the Trio floor relay, the old path and the new path (issue 8).

    .venv/bin/python loadtest/dataplane.py [--old af4e46b] [--new HEAD] [--seconds 20]
        [--relays floor old new] [--workers 1] [--json out.json]

For each relay, one after the other: a load-mode simulator (``trioproxy simulate --load``,
50 content chunks 20 ms apart: 54 events, ~1.0 s per stream) and this client share CPU 1;
the relay runs pinned to CPU 0 (``taskset -c 0``; with ``--workers N`` the gateway's N workers
run on CPUs 0..N-1). Loads, each a closed loop:

* 1,000 and 100 concurrent streams (``harness.py`` users, keep-alive, ``--seconds``);
* non-stream at 100 connections (``wrk``, after a 3 s warm-up).

The gateways (``old`` and ``new`` are commits run from ``git archive`` snapshots, one
worker) have auth on and a team budget, so every request takes a budget reservation.
Printed per row: streams (or requests) per second, relay CPU per event (per request for
non-stream), TTFT p50/p99 (harness: request sent -> first event; wrk: latency), broken
streams, relay peak RSS, and the machine's busy / foreign share (other people's load).

Since the control plane runs in its own process (``serve``: a supervisor, N data-plane
workers, one control plane), the relay's figures are given for the whole process group, as
before, and for the data plane alone (``common.serve_role``):

* ``cpu_us_per_event`` / "CPU µs/event group": every process of the relay's group (the old
  column, same meaning); ``cpu_us_per_event_workers`` / "workers": the data-plane workers
  only (a relay without workers, the floor or an older single-process commit: its one
  process), so a control plane's or supervisor's CPU does not count per event;
* ``peak_rss_mb`` / "peak RSS MB group": the highest summed RSS of the group at one sample
  (every 0.5 s; the old column, same meaning); ``peak_rss_workers_mb``,
  ``peak_rss_control_mb``, ``peak_rss_supervisor_mb``: each part's own highest (summed over
  its processes: N workers), in the table as "workers / control / supervisor";
* ``peak_resident_mb`` / "resident MB, pages once": the group's highest resident memory with
  every physical page counted once (``common.resident_mb``, every 1 s; needs root, else
  empty): the memory the group holds. The sum of RSS counts the interpreter, the shared
  libraries and their file cache once per process (~7-13 MB in each of the three).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import common
import trio
from harness import Environment, User, task
from scenarios import start_load_sim

STREAM = b'{"model":"chat","stream":true,"messages":[{"role":"user","content":"Tell me a story."}]}'
AUTH = (("authorization", f"Bearer {common.BENCH_KEY}"),)


class BenchStream(User):
    headers = AUTH

    @task()
    async def stream(self) -> None:
        await self.client.stream("stream", "/v1/chat/completions", STREAM)


def config(wd: Path, sim_url: str, commit: str, **server: object) -> Path:
    path = wd / "dataplane.toml"
    head = "\n".join(common.head_lines(wd, commit, **server))
    key = "\n".join(common.bench_key_lines())
    route = "\n".join([*common.chat_route_lines("sim"), *common.BENCH_BUDGET_LINES])
    path.write_text(f"""
{head}
[providers.sim]
kind = "openai"
base_url = "{sim_url}"
api_key_env = "{common.PROVIDER_KEY_ENV}"
max_connections = 2048
{route}
{key}
""")
    return path


def start_relay(kind: str, commit: str, wd: Path, sim: common.Server,
                workers: int = 1, **server: object) -> common.Server:  # fmt: skip
    port = common.free_port()
    if kind == "floor":
        argv = [str(common.VENV_BIN / "python"), str(Path(__file__).parent / "floor.py"),
                "--port", str(port), "--upstream", f"{common.HOST}:{sim.port}"]  # fmt: skip
        env: dict[str, str] = {}
    else:
        argv, env = common.trioproxy_argv(
            "serve", "--config", str(config(wd, sim.url, commit, **server)), "--host", common.HOST,
            "--port", str(port), "--workers", str(workers), commit=commit,
        )  # fmt: skip
        env[common.PROVIDER_KEY_ENV] = "sim"
    # one worker: CPU 0 to itself; N workers: every core (the simulator and client share CPU 1)
    argv = ["taskset", "-c", "0" if workers == 1 else f"0-{workers - 1}", *argv]
    return common.start(kind, argv, port, wd, env=env, ready_path="/_sim/stats"
                        if kind == "floor" else "/healthz")  # fmt: skip


def strace_counts(text: str) -> dict[str, int]:
    """``strace -c`` summary: syscall -> calls (its "total" line left out)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][:1].isdigit() and parts[-1] != "total":
            out[parts[-1]] = int(parts[3])
    return out


def stream_row(relay: common.Server, sim: common.Server, users: int, seconds: float,
               profile: Path | None = None, strace: Path | None = None) -> dict[str, Any]:  # fmt: skip
    env = Environment(relay.port, users, spawn_rate=1000.0, run_time=seconds,
                      user_classes=[BenchStream])  # fmt: skip
    spy = tracer = None
    pid = common.data_plane_pid(relay.pgid)  # not the busiest at start: the control plane
    window = int(seconds - 3)  # from 2 s in (after the ramp) to a second before the end
    with common.Meter({"gateway": relay.pgid, "sim": sim.pgid}, sample_s=0.5,
                      by_role=["gateway"]) as meter:  # fmt: skip
        if profile is not None:
            profile.parent.mkdir(parents=True, exist_ok=True)
            argv = [str(common.VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate",
                    "100", "--duration", str(window), "--format", "raw", "--output",
                    str(profile)]  # fmt: skip
            spy = subprocess.Popen(["bash", "-c", f"sleep 2; exec {' '.join(argv)}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        if strace is not None:  # the data plane's syscalls over the same window
            strace.parent.mkdir(parents=True, exist_ok=True)
            cmd = f"sleep 2; exec timeout -s INT {window} strace -c -f -o {strace} -p {pid}"
            tracer = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
        trio.run(lambda: env.run(quiet=True))
    for proc in (spy, tracer):
        if proc is not None:
            proc.wait(timeout=60)
    t = env.totals()
    cpu = meter.cpu["gateway"]
    row = {
        "load": f"{users} streams", "per_s": t["done_in_window"] / seconds,
        "cpu_us_per_event": 1e6 * cpu / max(1, t["events"]), "ttft_p50_ms": t["ttft_p50_ms"],
        "ttft_p99_ms": t["ttft_p99_ms"], "broken": t["broken"], "failures": t["failures"], "errors": t.get("errors", {}),
        "events": t["events"], "peak_rss_mb": meter.peak_rss_mb.get("gateway", 0.0),
        "peak_resident_mb": meter.peak_resident_mb.get("gateway"), **by_part(meter, t["events"]),
        "client_cpu_s": meter.cpu["client"], "sim_cpu_s": meter.cpu["sim"],
        "busy_pct": meter.busy_pct, "foreign_pct": meter.foreign_pct,
    }  # fmt: skip
    if strace is not None and strace.exists():  # per event: the window's share of the events
        events = max(1.0, t["events"] * window / seconds)
        row["syscalls_per_event"] = {
            name: round(n / events, 3)
            for name, n in sorted(strace_counts(strace.read_text()).items(), key=lambda kv: -kv[1])
        }
    return row


def by_part(meter: common.Meter, events: int) -> dict[str, float]:
    """The relay group's figures per part of ``serve`` (module docstring): the data plane is
    the workers, or the group's one process when it has none."""
    cpu, rss = meter.role_cpu["gateway"], meter.role_peak_rss_mb.get("gateway", {})
    workers = "workers" if rss.get("workers") or cpu.get("workers") else "main"
    main = "main" if workers == "workers" else None
    return {
        "cpu_us_per_event_workers": 1e6 * cpu[workers] / max(1, events),
        "cpu_s": meter.cpu["gateway"], "cpu_workers_s": cpu[workers],
        "cpu_control_s": cpu["control"], "cpu_supervisor_s": cpu[main] if main else 0.0,
        "peak_rss_workers_mb": rss.get(workers, 0.0), "peak_rss_control_mb": rss.get("control", 0.0),
        "peak_rss_supervisor_mb": rss.get(main, 0.0) if main else 0.0,
    }  # fmt: skip


def wrk_row(relay: common.Server, sim: common.Server, wd: Path, seconds: float) -> dict[str, Any]:
    common.wrk(relay.url + "/v1/chat/completions", "chat", wd, conns=100, seconds=3)
    with common.Meter({"gateway": relay.pgid, "sim": sim.pgid}, sample_s=0.5,
                      by_role=["gateway"]) as meter:  # fmt: skip
        r = common.wrk(relay.url + "/v1/chat/completions", "chat", wd, conns=100, seconds=seconds)
    cpu = meter.cpu["gateway"]
    return {
        "load": "non-stream c=100", "per_s": r.rps, "cpu_us_per_event": 1e6 * cpu / max(1, r.requests),
        "ttft_p50_ms": r.p50, "ttft_p99_ms": r.p99, "broken": r.errors + r.non2xx,
        "failures": r.errors + r.non2xx, "events": r.requests,
        "peak_rss_mb": meter.peak_rss_mb.get("gateway", 0.0),
        "peak_resident_mb": meter.peak_resident_mb.get("gateway"), **by_part(meter, r.requests),
        "client_cpu_s": meter.cpu["client"],
        "sim_cpu_s": meter.cpu["sim"], "busy_pct": meter.busy_pct, "foreign_pct": meter.foreign_pct,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", default="af4e46b", help="commit of the old path")
    p.add_argument("--new", default="HEAD", help="commit of the new path")
    p.add_argument("--relays", nargs="+", default=["floor", "old", "new"])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--streams", type=int, nargs="+", default=[1000, 100])
    p.add_argument("--workers", type=int, default=1,
                   help="gateway workers (old/new); >1 runs them on CPUs 0..N-1")  # fmt: skip
    p.add_argument("--shed", type=int, default=None, metavar="MAX_IN_FLIGHT",
                   help="old/new shed load: this max_in_flight (bench default 4096), "
                   "--queue-max waiting at most --queue-timeout-s, the rest 503 + Retry-After")  # fmt: skip
    p.add_argument("--queue-max", type=int, default=80)
    p.add_argument("--queue-timeout-s", type=float, default=0.5)
    p.add_argument("--json", default=None)
    p.add_argument("--strace", type=Path, default=None,
                   help="strace -c each relay's data plane during each stream load; write "
                   "DIR/<relay>-<users>.strace and print syscalls per event (strace slows "
                   "the relay: read the counts, not that row's CPU)")  # fmt: skip
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy the new path during its first stream load; write DIR/profile.*")  # fmt: skip
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    rows: list[dict[str, Any]] = []
    for kind in args.relays:
        commit = args.old if kind == "old" else args.new
        wd = common.workdir()
        sim = start_load_sim(wd, "sim", cpu=1)
        try:
            shed = {} if args.shed is None or kind == "floor" else {
                "max_in_flight": args.shed, "queue_max": args.queue_max,
                "queue_timeout_s": args.queue_timeout_s}  # fmt: skip
            relay = start_relay(kind, commit, wd, sim, args.workers if kind != "floor" else 1,
                                **shed)  # fmt: skip
            try:
                label = kind if kind == "floor" else f"{kind} ({commit})"
                if kind != "floor" and args.workers > 1:
                    label += f" -w {args.workers}"
                if shed:
                    label += f" shed {args.shed}/{args.queue_max}/{args.queue_timeout_s:g}s"
                busy = common.wait_quiet(max_wait=20)
                print(f"--- {label}: machine busy before start {busy:.0f}%", flush=True)
                for n, users in enumerate(args.streams):
                    spy = args.profile / "profile.collapsed" if (
                        args.profile and kind == "new" and n == 0) else None  # fmt: skip
                    traced = args.strace / f"{kind}-{users}.strace" if args.strace else None
                    rows.append({"relay": label,
                                 **stream_row(relay, sim, users, args.seconds, spy, traced)})  # fmt: skip
                    print(rows[-1], flush=True)
                    if spy is not None and spy.exists():
                        from overhead import summarize_profile

                        text = summarize_profile(spy)
                        (args.profile / "profile.txt").write_text(text + "\n")
                        print(text, flush=True)
                rows.append({"relay": label, **wrk_row(relay, sim, wd, args.seconds)})
                print(rows[-1], flush=True)
            finally:
                relay.stop()
        finally:
            sim.stop()
    print()
    print("| relay | load | per s | CPU µs/event group / workers | TTFT p50 / p99 ms | broken "
          "| peak RSS MB group | workers / control / supervisor | resident MB, pages once "
          "| busy / foreign % |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['relay']} | {r['load']} | {r['per_s']:,.1f} "
              f"| {r['cpu_us_per_event']:,.1f} / {r['cpu_us_per_event_workers']:,.1f} "
              f"| {r['ttft_p50_ms']:,.1f} / {r['ttft_p99_ms']:,.1f} | {r['broken']} "
              f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_workers_mb']:.0f} / "
              f"{r['peak_rss_control_mb']:.0f} / {r['peak_rss_supervisor_mb']:.0f} "
              f"| {'' if r['peak_resident_mb'] is None else format(r['peak_resident_mb'], '.0f')} "
              f"| {r['busy_pct']:.0f} / {r['foreign_pct']:.0f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
