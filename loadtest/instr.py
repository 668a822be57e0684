"""Instructions per stream event and per request, counted by callgrind (robust on a busy box).

    .venv/bin/python loadtest/instr.py [--commits HEAD 56887aa] [--streams 20] [--seconds 8]
        [--conns 10] [--top 30]

CPU time per event moves ±30 % with other people's load on a shared machine; the number of
instructions the gateway executes for a fixed workload hardly moves. For each commit: the
gateway (``dataplane.py``'s config: auth and a team budget on, one worker) runs under
``valgrind --tool=callgrind`` with instrumentation off, a load-mode simulator beside it; after
a warm-up, instrumentation is switched on (``callgrind_control -i on``) for a closed loop of
``--streams`` concurrent 54-event streams (harness users), then for non-stream requests at
``--conns`` connections (harness users), and the counts are dumped after each. Printed: user-space
instructions (Ir) per stream event and per non-stream request, and the top functions by
exclusive Ir (``callgrind_annotate``; Python functions show up as the interpreter's C frames,
so this says *how much*, py-spy says *where*). Kernel time (syscalls) is not counted.
The gateway runs ~50x slower under callgrind, so throughput figures here mean nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import common
import trio
from dataplane import AUTH, BenchStream, config
from harness import Environment, User, task
from scenarios import start_load_sim

CHAT = b'{"model":"chat","messages":[{"role":"user","content":"Tell me a story."}]}'


class BenchChat(User):
    headers = AUTH

    @task()
    async def ask(self) -> None:
        await self.client.post("chat", "/v1/chat/completions", CHAT)


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True,
                   timeout=120)  # fmt: skip


def _total_ir(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _newest_dump(wd: Path, before: set[Path]) -> Path:
    for _ in range(600):
        dumps = {p for p in wd.glob("callgrind.out.*.*") if p.suffix[1:].isdigit()}
        new = sorted(dumps - before, key=lambda p: p.stat().st_mtime)
        if new and new[-1].stat().st_size > 0:
            time.sleep(1.0)  # let the dump finish
            return new[-1]
        time.sleep(0.2)
    raise RuntimeError("no callgrind dump appeared")


def _instrumented(
    pid: int, wd: Path, port: int, users: int, user_class: type[User], seconds: float, *,
    zero: bool = False,
) -> tuple[dict[str, Any], Path]:  # fmt: skip
    """One load run with callgrind's instrumentation on (counters zeroed first with
    ``zero``): the run's totals and the dump written at its end."""
    before = set(wd.glob("callgrind.out.*.*"))
    if zero:
        _control(pid, "-z")
    _control(pid, "-i", "on")
    env = Environment(port, users, spawn_rate=1000.0, run_time=seconds, user_classes=[user_class])
    trio.run(lambda: env.run(quiet=True))
    _control(pid, "-i", "off")
    _control(pid, "-d")
    return env.totals(), _newest_dump(wd, before)


def measure(commit: str, args: argparse.Namespace) -> dict[str, object]:
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=None)
    try:
        port = common.free_port()
        argv, env = common.trioproxy_argv(
            "serve", "--config", str(config(wd, sim.url, commit)), "--host", common.HOST,
            "--port", str(port), "--workers", "1", commit=commit,
        )  # fmt: skip
        env[common.PROVIDER_KEY_ENV] = "sim"
        gw = common.start("gateway", common.callgrind_argv(argv, wd, env), port, wd, env=env,
                          timeout=600)  # fmt: skip
        try:
            pid = common.data_plane_pid(gw.pgid)  # the worker (the supervisor relays nothing)
            warm = Environment(port, 20, spawn_rate=1000.0, run_time=5.0,
                               user_classes=[BenchStream])  # fmt: skip
            trio.run(lambda: warm.run(quiet=True))
            out: dict[str, object] = {"commit": commit}
            t, dump = _instrumented(pid, wd, port, args.streams, BenchStream, args.seconds)
            out["events"], out["streams"] = t["events"], t["requests"]
            out["ir_per_event"] = _total_ir(dump) / max(1, t["events"])
            out["stream_dump"] = str(dump)
            c, dump = _instrumented(pid, wd, port, args.conns, BenchChat, args.seconds,
                                    zero=True)  # fmt: skip
            out["requests"] = c["requests"]
            out["failures"] = t["failures"] + c["failures"] + t["broken"]
            out["ir_per_request"] = _total_ir(dump) / max(1, c["requests"])
            out["request_dump"] = str(dump)
            return out
        finally:
            gw.stop(grace=20)
    finally:
        sim.stop()


def top(dump: str, n: int) -> str:
    text = subprocess.run(["callgrind_annotate", "--threshold=99", dump], capture_output=True,
                          text=True, check=False).stdout  # fmt: skip
    lines = [ln for ln in text.splitlines() if re.match(r"\s*[\d,]+ \(", ln)]
    return "\n".join(lines[: n + 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", nargs="+", default=["HEAD"])
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--conns", type=int, default=10)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--top", type=int, default=0)
    args = p.parse_args()
    rows = [measure(c, args) for c in args.commits]
    for r in rows:
        print(f"{r['commit']}: {r['ir_per_event']:,.0f} Ir per stream event ({r['events']} events, "
              f"{r['streams']} streams); {r['ir_per_request']:,.0f} Ir per non-stream request "
              f"({r['requests']} requests); failures {r['failures']}")  # fmt: skip
        if args.top:
            print(top(str(r["stream_dump"]), args.top))
            print(top(str(r["request_dump"]), args.top))


if __name__ == "__main__":
    main()
