"""Where a stream's gateway work goes: per stream, per chunk, per scheduler tick (issue 8).

    .venv/bin/python loadtest/chunk_profile.py [--commit HEAD] [--streams 20] [--seconds 8]
        [--short 5] [--long 50]

One gateway (``dataplane.py``'s config: auth and a team budget on, one worker) under
``valgrind --tool=callgrind`` (as ``instr.py``: robust on a busy box), a load-mode simulator
beside it. Three closed loops of ``--streams`` concurrent streams, instrumentation on only
during each: answers of ``--long`` content chunks, of ``--short`` ones (``max_tokens``: the
another simulator, another route), and ``--long`` again at a fifth of the concurrency. Each dump gives
the instructions (Ir), the streams and events relayed, and the scheduler ticks (calls of
``epoll_wait``: trio polls once per run-loop turn). A least-squares fit of

    Ir = a * streams + b * events + c * ticks

splits the work into a per-stream fixed cost (admission, records, the request's tasks,
connection reuse, head and end), a per-event cost (upstream read, event cut, client
write, metering) and a per-tick cost (trio's run loop: the poll, timers, rescheduling).
Under valgrind the gateway runs ~50x slower, so its ticks batch many more sockets than at
full speed: the per-tick cost is a property of a turn, and how many turns a real load takes
is counted by ``--ticks PID``-style sampling in :func:`real_ticks` (``perf stat`` on the
``epoll_wait`` tracepoint) during ``dataplane.py``-shaped runs: ``--real 1000 100``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import common
import dataplane
import trio
from dataplane import AUTH
from harness import Environment, User, task
from instr import _control, _newest_dump, _total_ir
from overhead import summarize_profile
from scenarios import start_load_sim


def stream_user(route: str) -> type[User]:
    body = (b'{"model":"%s","stream":true,"messages":[{"role":"user",'
            b'"content":"Tell me a story."}]}' % route.encode())  # fmt: skip

    class Streams(User):
        headers = AUTH

        @task()
        async def stream(self) -> None:
            await self.client.stream("stream", "/v1/chat/completions", body)

    return Streams


def epoll_calls(dump: Path) -> int:
    """Calls of ``epoll_wait`` recorded in a callgrind dump (name compression resolved)."""
    names: dict[str, str] = {}
    total = 0
    current = ""
    pat = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
    for line in dump.read_text(errors="replace").splitlines():
        m = pat.match(line)
        if m:
            ident, name = m.groups()
            if name:
                names[ident] = name
            if line.startswith("cfn="):
                current = names.get(ident, "")
            continue
        if line.startswith("calls=") and current in ("epoll_wait", "epoll_pwait"):
            total += int(line[6:].split()[0])
    return total


def start_gateway(commit: str, args: argparse.Namespace, *, valgrind: bool,
                  cpu: int | None = None) -> tuple[common.Server, common.Server, common.Server]:  # fmt: skip
    """Both load-mode simulators (routes ``chat``: ``--long`` chunks, ``short``: ``--short``)
    and the gateway (under callgrind with ``valgrind``, else pinned to CPU 0)."""
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=cpu, tokens=args.long)
    short = start_load_sim(wd, "sim-short", cpu=cpu, tokens=args.short)
    try:
        port = common.free_port()
        path = dataplane.config(wd, sim.url, commit)
        path.write_text(path.read_text() + SHORT_ROUTE.format(url=short.url,
                                                              env=common.PROVIDER_KEY_ENV))  # fmt: skip
        argv, env = common.trioproxy_argv(
            "serve", "--config", str(path), "--host", common.HOST, "--port", str(port),
            "--workers", "1", commit=commit,
        )  # fmt: skip
        env[common.PROVIDER_KEY_ENV] = "sim"
        if valgrind:
            argv = common.callgrind_argv(argv, wd, env)
        else:
            argv = ["taskset", "-c", "0", *argv]
        gw = common.start("gateway", argv, port, wd, env=env, timeout=600)
    except BaseException:
        sim.stop()
        short.stop()
        raise
    return sim, short, gw


SHORT_ROUTE = (
    """
[providers.short]
kind = "openai"
base_url = "{url}"
api_key_env = "{env}"
max_connections = 2048
"""
    + "\n".join(common.chat_route_lines("short", model="s", route="short"))
    + "\n"
)


def run_users(port: int, users: int, route: str, seconds: float) -> dict[str, Any]:
    if not users:
        time.sleep(seconds)
        return {"requests": 0, "events": 0, "failures": 0, "broken": 0}
    env = Environment(port, users, spawn_rate=1000.0, run_time=seconds,
                      user_classes=[stream_user(route)])  # fmt: skip
    trio.run(partial(env.run, quiet=True))
    return env.totals()


def callgrind_loads(commit: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    sim, short, gw = start_gateway(commit, args, valgrind=True)
    rows: list[dict[str, Any]] = []
    try:
        pid = common.data_plane_pid(gw.pgid)  # the worker (the supervisor relays nothing)
        wd = next(Path(a.split("=", 1)[1]).parent for a in gw.proc.args
                  if str(a).startswith("--callgrind-out-file="))  # fmt: skip
        run_users(gw.port, args.streams, "chat", 5.0)  # warm-up
        loads = [(0, "chat"), (args.streams, "chat"), (args.streams, "short"),
                 (max(1, args.streams // 5), "chat")]  # fmt: skip
        for users, route in loads:
            before = set(wd.glob("callgrind.out.*.*"))
            _control(pid, "-z")
            _control(pid, "-i", "on")
            t = run_users(gw.port, users, route, args.seconds)
            _control(pid, "-i", "off")
            _control(pid, "-d")
            dump = _newest_dump(wd, before)
            rows.append({"users": users, "route": route, "streams": t["requests"],
                         "events": t["events"], "ticks": epoll_calls(dump),
                         "ir": _total_ir(dump), "failures": t["failures"] + t["broken"],
                         "dump": str(dump)})  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        gw.stop(grace=20)
        sim.stop()
        short.stop()
    return rows


def spy_loads(commit: str, args: argparse.Namespace) -> None:
    """py-spy (100 Hz, from 2 s in) on the real gateway: ``--spy-users`` streams of the short
    route (where the per-stream work dominates), then of the long one."""
    os.sched_setaffinity(0, {1})
    sim, short, gw = start_gateway(commit, args, valgrind=False, cpu=1)
    try:
        pid = common.data_plane_pid(gw.pgid)
        args.spy.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[int, int, float]] = []
        for route in ("short", "chat"):
            raw = args.spy / f"{route}.collapsed"
            spy = [str(common.VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "100",
                   "--duration", str(int(args.seconds - 3)), "--format", "raw", "--output",
                   str(raw)]  # fmt: skip
            proc = subprocess.Popen(["bash", "-c", f"sleep 2; exec {' '.join(spy)}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            with common.Meter({"gateway": gw.pgid, "sim": sim.pgid, "short": short.pgid},
                              sample_s=0.5) as meter:  # fmt: skip
                t = run_users(gw.port, args.spy_users, route, args.seconds)
            proc.wait(timeout=60)
            cpu = meter.cpu["gateway"]
            rows.append((t["requests"], t["events"], cpu))
            print(f"--- {route}: {t['requests']} streams, {t['events']} events, gateway CPU "
                  f"{cpu:.2f} s ({1e6 * cpu / max(1, t['events']):.1f} µs/event), foreign "
                  f"{meter.foreign_pct:.0f} %", flush=True)  # fmt: skip
            if raw.exists():
                text = summarize_profile(raw, top=45)
                (args.spy / f"{route}.txt").write_text(text + "\n")
                print(text, flush=True)
        (s1, e1, c1), (s2, e2, c2) = rows  # c = s*F + e*C, solved for F and C
        per_event = (c2 * s1 - c1 * s2) / (e2 * s1 - e1 * s2)
        per_stream = (c1 - e1 * per_event) / s1
        print(f"real CPU (py-spy attached): per stream {1e6 * per_stream:,.0f} µs, per event "
              f"{1e6 * per_event:.1f} µs (tick shares folded in)", flush=True)  # fmt: skip
    finally:
        gw.stop()
        sim.stop()
        short.stop()


def fit(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Least squares of Ir - idle = a*streams + b*events + c*(ticks - idle ticks) over the
    load rows (3 x 3 normal equations); the first row is the idle run (timers, background
    threads: what the run's wall time costs whatever the load)."""
    idle, loads = rows[0], rows[1:]
    xs = [(float(r["streams"]), float(r["events"]), float(r["ticks"] - idle["ticks"]))
          for r in loads]  # fmt: skip
    ys = [float(r["ir"] - idle["ir"]) for r in loads]
    m = [[sum(x[i] * x[j] for x in xs) for j in range(3)] for i in range(3)]
    v = [sum(x[i] * y for x, y in zip(xs, ys, strict=True)) for i in range(3)]
    # Gaussian elimination
    for i in range(3):
        p = max(range(i, 3), key=lambda r: abs(m[r][i]))
        m[i], m[p], v[i], v[p] = m[p], m[i], v[p], v[i]
        for r in range(i + 1, 3):
            f = m[r][i] / m[i][i]
            m[r] = [a - f * b for a, b in zip(m[r], m[i], strict=True)]
            v[r] -= f * v[i]
    out = [0.0, 0.0, 0.0]
    for i in (2, 1, 0):
        out[i] = (v[i] - sum(m[i][j] * out[j] for j in range(i + 1, 3))) / m[i][i]
    return out[0], out[1], out[2]


def real_ticks(commit: str, users: list[int], seconds: float) -> list[dict[str, Any]]:
    """``dataplane.py``'s stream rows (gateway on CPU 0) with the gateway's ``epoll_wait``
    calls, ``sendto`` and ``recvfrom`` counted by ``perf stat`` on the syscall tracepoints."""
    os.sched_setaffinity(0, {1})
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=1)
    rows: list[dict[str, Any]] = []
    try:
        relay = dataplane.start_relay("new", commit, wd, sim)
        try:
            pid = common.data_plane_pid(relay.pgid)
            for n in users:
                events = ["syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_sendto",
                          "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_epoll_ctl"]  # fmt: skip
                out = wd / f"perf-{n}.txt"
                perf = subprocess.Popen(
                    ["perf", "stat", "-x", ",", "-o", str(out), "-p", str(pid),
                     *(a for e in events for a in ("-e", e))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                row = dataplane.stream_row(relay, sim, n, seconds)
                perf.send_signal(2)
                perf.wait(timeout=30)
                counts = {}
                for line in out.read_text().splitlines():
                    parts = line.split(",")
                    if len(parts) > 3 and parts[0].strip().isdigit():
                        counts[parts[2].split(":")[-1].replace("sys_enter_", "")] = int(parts[0])
                row.update(counts)
                rows.append(row)
                print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()},
                      flush=True)  # fmt: skip
        finally:
            relay.stop()
    finally:
        sim.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default="HEAD")
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--short", type=int, default=5)
    p.add_argument("--long", type=int, default=50)
    p.add_argument("--real", type=int, nargs="*", default=[],
                   help="also count real ticks at these concurrencies (no valgrind)")  # fmt: skip
    p.add_argument("--no-callgrind", action="store_true")
    p.add_argument("--spy", type=Path, default=None, help="py-spy the real gateway; DIR")
    p.add_argument("--spy-users", type=int, default=100)
    args = p.parse_args()
    if not args.no_callgrind:
        rows = callgrind_loads(args.commit, args)
        a, b, c = fit(rows)
        print(f"{args.commit}: per stream {a:,.0f} Ir, per event {b:,.0f} Ir, per tick {c:,.0f} Ir;"
              f" idle {rows[0]['ir']:,} Ir in {rows[0]['ticks']} ticks")  # fmt: skip
        idle = rows[0]
        for r in rows[1:]:
            e = max(1, r["events"])
            print(f"  {r['users']} x {r['route']}: {r['ir'] / e:,.0f} Ir/event = "
                  f"stream {a * r['streams'] / e:,.0f} + event {b:,.0f} + tick "
                  f"{c * (r['ticks'] - idle['ticks']) / e:,.0f} + idle {idle['ir'] / e:,.0f} "
                  f"({e / max(1, r['ticks']):.1f} events/tick)")  # fmt: skip
    if args.spy is not None:
        spy_loads(args.commit, args)
    if args.real:
        for r in real_ticks(args.commit, args.real, args.seconds):
            e = max(1, r["events"])
            print(f"  real {r['load']}: {r['cpu_us_per_event']:.1f} µs/event, "
                  f"{e / max(1, r.get('epoll_wait', 0)):.2f} events/tick, per event: "
                  f"sendto {r.get('sendto', 0) / e:.2f}, recvfrom {r.get('recvfrom', 0) / e:.2f}, "
                  f"epoll_ctl {r.get('epoll_ctl', 0) / e:.2f}; foreign {r['foreign_pct']:.0f} %")  # fmt: skip


if __name__ == "__main__":
    main()
