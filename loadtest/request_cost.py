"""CPU per non-stream request with the production wiring, in process (no sockets).

    .venv/bin/python loadtest/request_cost.py [--requests 4000] [--conns 100] [--rounds 3]
        [--profile] [--top 40] [--no-budget] [--source DIR]

``inprocess.py`` drives ``create_app`` with no budget, no ledger and no journal; this drives
``server.factory.build_gateway`` (what a worker runs) on ``dataplane.py``'s config shape:
auth, a team budget on the embedded SQLite store (a reservation and a settle per request),
the ledger (journal + SQLite writer) and the access log (JSON lines to a file), with the
app's lifespan and services running and the heap settled as ``serve`` does. Only the
network is replaced: the upstream answers a small completion at once (in-memory transport),
and requests enter the ASGI app directly (no ``httpd``). ``--conns`` tasks send requests in
a closed loop, so what batches under load (metrics flush, SQLite group commit, journal)
batches here too.

Printed: CPU µs per request (process time, every thread; the best of ``--rounds``), and
per thread. ``--profile``: cProfile of the event loop's thread over one more round, the
top functions by own and by inclusive time in µs per request (cProfile roughly doubles
Python's cost; read the shares). ``--source DIR``: a ``git archive`` snapshot of another
commit.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser()
ap.add_argument("--requests", type=int, default=4000)
ap.add_argument("--conns", type=int, default=100)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--warmup", type=int, default=1000)
ap.add_argument("--profile", action="store_true")
ap.add_argument("--top", type=int, default=40)
ap.add_argument("--dump", type=Path, default=None,
                help="with --profile: also write the pstats file here (for callers)")  # fmt: skip
ap.add_argument("--no-budget", action="store_true")
ap.add_argument("--http-upstream", action="store_true",
                help="the real upstream client (HttpTransport, pooled keep-alive) against a "
                "minimal HTTP/1.1 server in this process on 127.0.0.1, instead of the in-memory "
                "transport: the upstream exchange's own work is counted too (so is the "
                "server's, the same for every commit)")  # fmt: skip
ap.add_argument("--source", type=Path, default=None)
ap.add_argument("--steps", action="store_true",
                help="also count the scheduler's work per request over one more round (a "
                "Trio instrument): task steps, tasks spawned, thread hops and I/O waits")  # fmt: skip
ap.add_argument("--instr", type=int, nargs=2, metavar=("N1", "N2"), default=None,
                help="count instructions instead: run under callgrind with N1 and with N2 "
                "requests (after the warm-up), print the difference per request")  # fmt: skip
ap.add_argument("--store-timeout", type=float, default=None,
                help="budgets.store_timeout_s (callgrind runs need a long one)")  # fmt: skip
args = ap.parse_args()
if args.source is not None:
    sys.path.insert(0, str(args.source))

import common  # noqa: E402
import trio  # noqa: E402

from trioproxy.config import load_settings  # noqa: E402
from trioproxy.server.factory import build_gateway  # noqa: E402
from trioproxy.server.worker import settle_heap  # noqa: E402
from trioproxy.telemetry.logs import configure_logging  # noqa: E402

BODY = common.CHAT_BODY % b"chat"


def config(wd: Path, upstream: str = "http://127.0.0.1:9") -> Path:
    budget = [] if args.no_budget else common.BENCH_BUDGET_LINES
    if args.store_timeout is not None:
        budget = ["[budgets]", f"store_timeout_s = {args.store_timeout}", *budget]
    path = wd / "cost.toml"
    lines = [
        "[server]", "max_in_flight = 4096", "[storage]", f'state_dir = "{wd / "state"}"',
        "[providers.sim]", 'kind = "openai"', f'base_url = "{upstream}"',
        'api_key_env = "K"', *common.chat_route_lines("sim"), *budget,
        *common.bench_key_lines(),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def thread_cpu() -> dict[str, float]:
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        key = "main" if task.name == str(me) else "threads"
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


HEADERS = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {common.BENCH_KEY}".encode()),
           (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]  # fmt: skip


def _no_disconnect(gone: Any) -> None:
    """The server's disconnect hook (``httpd``): these clients never leave."""


def _body_ready() -> bool:
    """The server's ``trioproxy.body_ready`` (``httpd``): a small body comes with its head,
    all in when the app starts."""
    return True


async def one(app: Any) -> None:
    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "http_version": "1.1", "method": "POST",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": HEADERS, "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8080), "scheme": "http",
             "trioproxy.on_disconnect": _no_disconnect,  # as httpd offers them
             "trioproxy.body_ready": _body_ready}  # fmt: skip
    await common.asgi_request(app, scope, BODY, send)
    if status != 200:
        raise RuntimeError(f"status {status}")


async def load(app: Any, requests: int, conns: int) -> None:
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one(app)

    async with trio.open_nursery() as nursery:
        for _ in range(conns):
            nursery.start_soon(client)


UPSTREAM_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(common.COMPLETION)
    + common.COMPLETION
)


async def upstream(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """``--http-upstream``: answer every request (keep-alive) with :data:`common.COMPLETION`."""
    import re

    async def serve(stream: trio.SocketStream) -> None:
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                length = re.search(rb"(?i)content-length: *(\d+)", buf[:end])
                size = end + 4 + (int(length.group(1)) if length else 0)
                if len(buf) < size:
                    break
                buf = buf[size:]
                await stream.send_all(UPSTREAM_ANSWER)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(serve, listeners)


async def lifespan(app: Any, started: trio.Event, stop: trio.Event) -> None:
    sent_startup = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_startup
        if not sent_startup:
            sent_startup = True
            return {"type": "lifespan.startup"}
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"].endswith("failed"):
            raise RuntimeError(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


async def main() -> None:
    import trioproxy

    wd = Path(tempfile.mkdtemp(prefix="tp-cost-"))
    logfile = open(wd / "gateway.log", "w")  # noqa: ASYNC230 (set-up, before any load)
    configure_logging("info", "json", stream=logfile)
    stop, started = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        if args.http_upstream:
            port = await nursery.start(upstream)
            settings = load_settings(str(config(wd, f"http://127.0.0.1:{port}")), env={"K": "x"})
            app = build_gateway(settings)
        else:
            settings = load_settings(str(config(wd)), env={"K": "x"})
            app = build_gateway(settings, transport=common.InstantTransport())
        print(f"trioproxy from {next(iter(trioproxy.__path__))}; state in {wd}")
        nursery.start_soon(lifespan, app, started, stop)
        await started.wait()
        settle_heap()
        await load(app, args.warmup, args.conns)  # warm-up
        best: tuple[float, dict[str, float]] | None = None
        for _ in range(args.rounds):
            t0, th0 = time.process_time(), thread_cpu()
            await load(app, args.requests, args.conns)
            t1, th1 = time.process_time(), thread_cpu()
            per = {k: 1e6 * (th1[k] - th0.get(k, 0.0)) / args.requests for k in th1}
            cpu = 1e6 * (t1 - t0) / args.requests
            print(
                f"  round: {cpu:,.1f} µs per request ("
                + ", ".join(f"{k} {v:,.1f}" for k, v in per.items())
                + ")",
                flush=True,
            )
            if best is None or cpu < best[0]:
                best = (cpu, per)
        assert best is not None
        print(f"best: {best[0]:,.1f} µs CPU per request "
              f"({args.conns} concurrent, {args.requests} a round)")  # fmt: skip
        if args.steps:
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            await load(app, args.requests, args.conns)
            trio.lowlevel.remove_instrument(counter)
            counter.report(args.requests)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await load(app, args.requests, args.conns)
            prof.disable()
            if args.dump is not None:
                prof.dump_stats(args.dump)
            report(prof, args.requests)
        stop.set()
        nursery.cancel_scope.cancel()  # the upstream server (the lifespan ended with stop)
    logfile.close()


class StepCounter(trio.abc.Instrument):
    """``--steps``: what the scheduler does per request (each step is a task switch: ~2-5 µs
    of run-loop work besides the task's own code)."""

    def __init__(self) -> None:
        self.steps = self.spawned = self.io_waits = self.batches = 0
        self.by_task: dict[str, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        self.by_task[task.name] = self.by_task.get(task.name, 0) + 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1

    def report(self, n: int) -> None:
        print(f"\nscheduler, per request: {self.steps / n:.1f} task steps, "
              f"{self.spawned / n:.2f} tasks spawned, {self.io_waits / n:.2f} I/O waits "
              f"(run-loop batches)")  # fmt: skip
        print("task steps per request by task name:")
        for name, count in sorted(self.by_task.items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {count / n:7.2f}  {name}")


def instructions() -> None:
    """``--instr N1 N2``: this script under callgrind twice, at once; Ir per request."""
    import re
    import subprocess

    out = Path(tempfile.mkdtemp(prefix="tp-cost-cg-"))
    argv = [a for a in sys.argv[1:]]
    i = argv.index("--instr")
    del argv[i : i + 3]
    procs = []
    for n in args.instr:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.{n}",
               sys.executable, __file__, *argv, "--requests", str(n), "--rounds", "1",
               "--store-timeout", "60"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))  # fmt: skip
    totals = []
    for n, proc in zip(args.instr, procs, strict=True):
        text, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run of {n} requests failed:\n{text[-3000:]}")
        got = re.search(r"^totals: (\d+)", (out / f"cg.{n}").read_text(), re.M)
        assert got is not None
        totals.append(int(got.group(1)))
    per = (totals[1] - totals[0]) / (args.instr[1] - args.instr[0])
    print(f"instructions: {per:,.0f} Ir per request ({args.instr[1] - args.instr[0]} requests: "
          f"{totals[0]:,} -> {totals[1]:,} Ir)")  # fmt: skip


def report(prof: cProfile.Profile, n: int) -> None:
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    calls: int = stats.total_calls  # type: ignore[attr-defined]
    print(
        f"\ncProfile (event-loop thread): {1e6 * total / n:,.0f} µs per request own time "
        f"in total, {calls / n:,.0f} calls per request"
    )

    def name(k: Any) -> str:
        file, line, fn = k
        short = file.split("site-packages/")[-1].split("trioproxy/")[-1]
        return f"{fn} ({short}:{line})"

    print(f"\ntop {args.top} by own time (µs per request, calls per request):")
    for k, v in sorted(raw.items(), key=lambda kv: -kv[1][2])[: args.top]:
        print(f"  {1e6 * v[2] / n:8.1f}  {v[1] / n:6.1f}  {name(k)}")
    print(f"\ntop {args.top} trioproxy functions by inclusive time (µs per request):")
    ours = [(k, v) for k, v in raw.items() if "trioproxy/" in k[0]]
    for k, v in sorted(ours, key=lambda kv: -kv[1][3])[: args.top]:
        print(f"  {1e6 * v[3] / n:8.1f}  {v[1] / n:6.1f}  {name(k)}")


if args.instr is not None:
    instructions()
else:
    trio.run(main)
