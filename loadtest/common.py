"""Shared plumbing of the gateway benchmarks (overhead, ceiling, streams, fallback).

Processes: every server runs in its own session (= process group, pgid = pid)
and is stopped by signalling that group, never by name. Accounting reads
``/proc``: CPU seconds and RSS of a whole process group (hypercorn's master
plus its workers), and the machine-wide busy share from ``/proc/stat`` so a
run on a box shared with other people's tests can be told apart.

Config text every bench writes (the ``[server]`` / ``[storage]`` head, the bench key, the
``chat`` route on model ``m`` and the bench team's budget) and the in-process driver
(``request_cost.py``, ``inprocess.py``: an upstream that answers at once, one request into
an ASGI app) are written here once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"
BENCH_KEY = "tp-bench-key"
PROVIDER_KEY_ENV = "TP_BENCH_PROVIDER_KEY"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_BODY = (
    b'{"model":"%s","messages":[{"role":"user","content":"Hello there, how are you today?"}]'
    b',"max_tokens":30}'
)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks that stop our servers


signal.signal(signal.SIGTERM, _exit_on_sigterm)


def free_port() -> int:
    """A free port below the ephemeral range (32768+), see research/stack.md section 4."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


# ---------------------------------------------------------------- processes


@dataclass
class Server:
    """A server process group started by :func:`start`; stop it with :meth:`stop`."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                return
        try:  # workers left behind by a master that exited
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def start(
    name: str,
    argv: Sequence[str],
    port: int,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/healthz",
    timeout: float = 30.0,
) -> Server:
    """Start ``argv`` in its own process group and wait until ``ready_path`` answers."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=workdir,
            start_new_session=True,
        )
    server = Server(name, port, proc, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.url + ready_path, timeout=1) as r:
                if r.status < 500:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} not ready after {timeout}s: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)


def source_tree(commit: str = "HEAD") -> Path:
    """The trioproxy sources to run: a snapshot of a commit (``git archive``, default HEAD).

    Others edit the work tree while benchmarks run; a snapshot keeps a run on
    one consistent version. ``TP_BENCH_SOURCE=worktree`` runs the work tree.
    """
    if os.environ.get("TP_BENCH_SOURCE") == "worktree" and commit == "HEAD":
        return ROOT
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"tp-bench-src-{sha}"
    if not tree.exists():
        tmp = Path(tempfile.mkdtemp(prefix="tp-bench-src-"))
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        tmp.rename(tree)
        print(f"trioproxy under test: commit {sha} (snapshot in {tree})", flush=True)
    return tree


def server_lines(commit: str = "HEAD") -> list[str]:
    """``[server]`` keys a bench config needs on ``commit``: with the lean data plane
    (``trioproxy/httpd``), its own admin port and no per-key concurrency cap (one bench
    key drives all the load); none on older commits, which do not know these keys."""
    if not (source_tree(commit) / "trioproxy" / "httpd").is_dir():
        return []
    return ["max_in_flight_per_key = 0", f"admin_port = {free_port()}"]


def trioproxy_argv(*args: str, commit: str = "HEAD") -> tuple[list[str], dict[str, str]]:
    """``trioproxy ARGS`` run from :func:`source_tree`, and the env it needs."""
    tree = source_tree(commit)
    return [str(VENV_BIN / "python"), "-m", "trioproxy", *args], {"PYTHONPATH": str(tree)}


def start_simulator(workdir: Path, name: str = "sim", **fault: object) -> Server:
    port = free_port()
    argv, env = trioproxy_argv("simulate", "--host", HOST, "--port", str(port))
    sim = start(name, argv, port, workdir, env=env, ready_path="/_sim/stats")
    if fault:
        set_faults(sim, **fault)
    return sim


def set_faults(sim: Server, **fault: object) -> None:
    req = urllib.request.Request(
        sim.url + "/_sim/faults", data=json.dumps(fault).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.read()


def admin_url(config: Path) -> str:
    """The control plane (dashboard, /metrics) of the gateway run with ``config``."""
    import tomllib

    server = tomllib.loads(config.read_text())["server"]
    return f"http://{server.get('admin_host', HOST)}:{server['admin_port']}"


def start_gateway(workdir: Path, config: Path, workers: int = 1, commit: str = "HEAD") -> Server:
    port = free_port()
    argv, env = trioproxy_argv("serve", "--config", str(config), "--host", HOST, commit=commit)
    argv += ["--port", str(port), "--workers", str(workers)]
    return start("gateway", argv, port, workdir, env={**env, PROVIDER_KEY_ENV: "sim"})


# ---------------------------------------------------------------- config


def head_lines(workdir: Path, commit: str = "HEAD", **server: object) -> list[str]:
    """The ``[server]`` (4,096 in flight, a 2 s drain, :func:`server_lines`, ``server``'s
    keys) and ``[storage]`` tables every bench config starts with."""
    server = {"max_in_flight": 4096, **server}
    return [
        "[server]",
        *(f"{k} = {v}" for k, v in server.items()),
        "shutdown_grace_s = 2.0",
        *server_lines(commit),
        "[storage]",
        f'state_dir = "{workdir / "state"}"',
    ]


def bench_key_lines() -> list[str]:
    """The ``[[api_keys]]`` entry of :data:`BENCH_KEY` (team ``bench``)."""
    digest = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
    return ["[[api_keys]]", 'name = "bench"', f'key_sha256 = "{digest}"', 'team = "bench"']


def chat_route_lines(provider: str, model: str = "m", route: str = "chat") -> list[str]:
    """``model`` on ``provider`` (gpt-4o-mini's prices) and ``route``: a chain of ``model``
    alone."""
    return [
        f"[models.{model}]", f'provider = "{provider}"', "input_per_mtok = 0.15",
        "output_per_mtok = 0.60", f"[routes.{route}]", f"[[routes.{route}.chains.default]]",
        f'model = "{model}"',
    ]  # fmt: skip


BENCH_BUDGET_LINES = ["[budgets.teams.bench]", "daily_usd = 1000000.0"]
"""The bench team's budget: never reached, but every request takes a reservation."""


def write_config(
    workdir: Path,
    models: Mapping[str, str],
    routes: Mapping[str, Sequence[str]] = {},
    *,
    breaker_threshold: int = 5,
    stream_buffer: int = 8,
) -> Path:
    """A gateway config: one openai provider + model per simulator URL, given routes.

    ``models`` maps a model name to its simulator's base URL; ``routes`` maps a
    route name to its default chain (model names, in order).
    """
    lines = [
        *head_lines(workdir, stream_buffer=stream_buffer),
        "[breaker]",
        f"failure_threshold = {breaker_threshold}",
    ]
    for name, url in models.items():
        lines += [
            f"[providers.p-{name}]",
            'kind = "openai"',
            f'base_url = "{url}"',
            f'api_key_env = "{PROVIDER_KEY_ENV}"',
            "max_connections = 2048",
            f"[models.{name}]",
            f'provider = "p-{name}"',
            "input_per_mtok = 0.15",
            "output_per_mtok = 0.60",
        ]
    for route, chain in routes.items():
        lines.append(f"[routes.{route}]")
        for model in chain:
            lines += [f"[[routes.{route}.chains.default]]", f'model = "{model}"']
    lines += bench_key_lines()
    path = workdir / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tp-bench-"))


# ---------------------------------------------------------------- /proc accounting


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def pid_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    """CPU seconds of this process plus its waited-for children (e.g. ``wrk``)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def group_cpu(pgid: int) -> float:
    return sum(pid_cpu(pid) for pid in group_pids(pgid))


def group_rss_mb(pgid: int) -> float:
    return sum(pid_rss_mb(pid) for pid in group_pids(pgid))


SERVE_ROLES = ("workers", "control", "main")
"""The parts of a ``trioproxy serve`` process group :func:`serve_role` tells apart."""


def serve_role(pid: int, pgid: int) -> str:
    """Which part of a server's process group ``pid`` is, from its command line:
    ``workers`` (``trioproxy.server.worker``: the data plane), ``control``
    (``trioproxy.server.control``: the control plane), ``main`` (the group's leader:
    ``serve``'s supervisor, or the only process of a relay without that process model, such
    as the floor relay or an older commit's single process), ``other`` (anything else)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "other"
    if b"trioproxy.server.worker" in argv:
        return "workers"
    if b"trioproxy.server.control" in argv:
        return "control"
    return "main" if pid == pgid else "other"


def callgrind_argv(argv: list[str], wd: Path, env: dict[str, str]) -> list[str]:
    """``argv`` (a ``trioproxy serve``) with its data-plane worker under callgrind,
    instrumentation off until ``callgrind_control -i on``: valgrind follows the supervisor's
    children (the worker runs as ``python -m trioproxy.server.worker``) but not the control
    plane, and writes ``callgrind.out.<pid>`` dumps into ``wd``. hnswlib's wheel uses
    instructions valgrind cannot run: ``env`` gets an empty stand-in module first on its
    ``PYTHONPATH`` (the bench configs have no semantic cache). The worker's pid:
    :func:`data_plane_pid` once it runs."""
    stub = wd / "vg-stubs"
    stub.mkdir(exist_ok=True)
    (stub / "hnswlib.py").write_text("")
    env["PYTHONPATH"] = f"{stub}:{env['PYTHONPATH']}"
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--fair-sched=yes",
            "--trace-children=yes", "--trace-children-skip-by-arg=*trioproxy.server.control*",
            f"--callgrind-out-file={wd}/callgrind.out.%p", *argv]  # fmt: skip


def data_plane_pid(pgid: int) -> int:
    """The process of group ``pgid`` that relays requests: its (first) data-plane worker, or
    the group's leader when it has none (the floor relay, an older single-process commit).
    Not the busiest process at the time asked: just after start-up that is the control
    plane, which profiled nothing of the data plane."""
    pids = sorted(group_pids(pgid))
    workers = [pid for pid in pids if serve_role(pid, pgid) == "workers"]
    return workers[0] if workers else pgid


def pid_rss_mb(pid: int) -> float:
    """``VmRSS`` of one process in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT, _PFN = 1 << 63, (1 << 55) - 1


def _present_pfns(pid: int) -> Any:
    """The physical frame numbers of ``pid``'s resident pages (``/proc/PID/pagemap``: bit 63
    present, bits 0-54 the frame; the kernel shows frames to root only, zeros otherwise), as a
    numpy array; empty if the process is gone."""
    import numpy as np

    parts = []
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb", 0) as pm:
            for line in maps:
                span, perms = line.split(None, 2)[:2]
                lo, hi = (int(x, 16) for x in span.split("-"))
                if perms.startswith("---") or lo >= 1 << 47:  # reserved, or [vsyscall]
                    continue
                pm.seek((lo // PAGE) * 8)
                entries = np.frombuffer(pm.read(((hi - lo) // PAGE) * 8), dtype=np.uint64)
                parts.append(entries[(entries & np.uint64(_PRESENT)) != 0] & np.uint64(_PFN))
    except (OSError, ValueError):
        pass
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def resident_mb(pids: Sequence[int]) -> float | None:
    """Resident memory of a set of processes with every physical page counted once, in MB:
    the memory the set holds. A sum of ``VmRSS`` counts each page once per process that maps
    it (the interpreter, the shared libraries and their file cache, ~7-13 MB in every Python
    process here), and PSS shares a page with processes outside the set (the simulator, the
    client). None when the frames are hidden (not root)."""
    import numpy as np

    frames = [_present_pfns(pid) for pid in pids]
    every = np.concatenate(frames) if frames else np.empty(0, dtype=np.uint64)
    if every.size and not every.any():
        return None
    return np.unique(every).size * PAGE / 2**20


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def wait_quiet(min_idle: float = 0.85, window: float = 2.0, max_wait: float = 60.0) -> float:
    """Wait until the machine is at least ``min_idle`` idle for ``window`` s; return busy %."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_ticks()
        time.sleep(window)
        b1, t1 = machine_ticks()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy <= 1 - min_idle or time.monotonic() > deadline:
            return 100 * busy


@dataclass
class Meter:
    """CPU and machine busy share over one measured interval; RSS peak by sampling.

    ``peak_rss_mb[name]`` is the highest summed ``VmRSS`` of group ``name``'s processes seen
    at one sample (every ``sample_s``); ``cpu[name]`` the group's CPU seconds over the interval.
    For the groups named in ``by_role`` the same two figures are also kept per
    :func:`serve_role` (``role_peak_rss_mb[name][role]``: the highest sum over that role's
    processes at one sample, so the roles' peaks need not add up to the group's;
    ``role_cpu[name][role]``), and ``peak_resident_mb[name]``: the group's highest
    :func:`resident_mb` (each physical page once; taken every ``resident_every``-th sample,
    as it reads every process's page map; absent when not root). ``foreign_pct`` is machine CPU not spent by the measured
    groups or this process, in % of the whole machine: other people's load during the run.
    """

    pgids: Mapping[str, int]
    sample_s: float = 0.25
    by_role: Sequence[str] = ()
    resident_every: int = 2
    cpu: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    role_cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    role_peak_rss_mb: dict[str, dict[str, float]] = field(default_factory=dict)
    peak_resident_mb: dict[str, float] = field(default_factory=dict)
    rss_timeline: list[tuple[float, float]] = field(default_factory=list)
    busy_pct: float = 0.0
    foreign_pct: float = 0.0
    seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _role_of: dict[int, str] = field(default_factory=dict)

    def __enter__(self) -> Meter:
        self._cpu0 = {n: group_cpu(g) for n, g in self.pgids.items()}
        self._pid_cpu0 = {n: self._pid_cpus(n) for n in self.by_role}
        self._self0 = self_cpu()
        self._ticks0 = machine_ticks()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _roles(self, name: str) -> dict[int, str]:
        """The role of every process of group ``name`` now (looked up once per pid)."""
        pgid = self.pgids[name]
        known = self._role_of
        return {pid: known.get(pid) or known.setdefault(pid, serve_role(pid, pgid))
                for pid in group_pids(pgid)}  # fmt: skip

    def _pid_cpus(self, name: str) -> dict[int, tuple[str, float]]:
        return {pid: (role, pid_cpu(pid)) for pid, role in self._roles(name).items()}

    def _sample(self) -> None:
        tick = 0
        while not self._stop.wait(self.sample_s):
            tick += 1
            for n, g in self.pgids.items():
                if n in self.by_role and tick % self.resident_every == 0:
                    mb = resident_mb(group_pids(g))
                    if mb is not None:
                        self.peak_resident_mb[n] = max(self.peak_resident_mb.get(n, 0.0), mb)
                if n in self.by_role:
                    by_role = dict.fromkeys(SERVE_ROLES, 0.0)
                    for pid, role in self._roles(n).items():
                        by_role[role] = by_role.get(role, 0.0) + pid_rss_mb(pid)
                    rss = sum(by_role.values())
                    peaks = self.role_peak_rss_mb.setdefault(n, {})
                    for role, mb in by_role.items():
                        peaks[role] = max(peaks.get(role, 0.0), mb)
                else:
                    rss = group_rss_mb(g)
                self.peak_rss_mb[n] = max(self.peak_rss_mb.get(n, 0.0), rss)
                if n == "gateway":
                    self.rss_timeline.append((time.monotonic() - self._t0, rss))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.monotonic() - self._t0
        self.cpu = {n: group_cpu(g) - self._cpu0[n] for n, g in self.pgids.items()}
        self.cpu["client"] = self_cpu() - self._self0
        for n in self.by_role:
            before = self._pid_cpu0[n]
            spent = self.role_cpu[n] = dict.fromkeys(SERVE_ROLES, 0.0)
            for pid, (role, cpu) in self._pid_cpus(n).items():
                spent[role] = spent.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
        b1, t1 = machine_ticks()
        busy_ticks, all_ticks = b1 - self._ticks0[0], t1 - self._ticks0[1]
        self.busy_pct = 100 * busy_ticks / max(1, all_ticks)
        ours = sum(self.cpu.values()) * CLK_TCK
        self.foreign_pct = max(0.0, 100 * (busy_ticks - ours) / max(1, all_ticks))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------- wrk

WRK_LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
function done(summary, latency, requests)
  io.write(string.format("RESULT {\\"requests\\":%%d,\\"seconds\\":%%f,\\"errors\\":%%d,"
    .. "\\"non2xx\\":%%d,\\"p50\\":%%f,\\"p90\\":%%f,\\"p99\\":%%f,\\"max\\":%%f}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, summary.errors.status,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    non2xx: int
    p50: float
    p90: float
    p99: float
    max: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str, model: str, workdir: Path, *, conns: int, seconds: float, threads: int = 1
) -> WrkResult:
    """POST the chat body at ``url`` with ``conns`` keep-alive connections (latencies in ms)."""
    script = workdir / "post.lua"
    script.write_text(WRK_LUA % ((CHAT_BODY % model.encode()).decode(), BENCH_KEY))
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{round(seconds)}s", "--timeout", "10s"]
    argv += ["-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return WrkResult(**json.loads(line[len("RESULT ") :]))


__all__ = [
    "BENCH_KEY",
    "CHAT_BODY",
    "HOST",
    "Meter",
    "Server",
    "WrkResult",
    "admin_url",
    "bench_key_lines",
    "free_port",
    "group_cpu",
    "group_rss_mb",
    "head_lines",
    "percentile",
    "pid_rss_mb",
    "resident_mb",
    "serve_role",
    "set_faults",
    "start",
    "start_gateway",
    "start_simulator",
    "wait_quiet",
    "workdir",
    "write_config",
    "wrk",
]


# ------------------------------------------------------------------ in process (no sockets)

COMPLETION = orjson.dumps({
    "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
})  # fmt: skip
"""The small OpenAI completion an in-process upstream answers."""


class InstantResponse:
    """An upstream answer already in memory (the transport seam's response): ``body`` in
    reads of ``chunk`` bytes, each after a checkpoint."""

    def __init__(self, body: bytes, chunk: int = 1 << 20) -> None:
        self.status = 200
        self.headers: dict[str, str] = {"content-type": "application/json"}
        self._parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._parts.pop(0) if self._parts else b""

    async def read(self, limit: int) -> bytes:
        return b"".join([p async for p in self._iter()])[:limit]

    async def _iter(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive():
            yield chunk


class InstantTransport:
    """The gateway's transport, answering at once: :data:`COMPLETION`, or ``stream`` (SSE
    bytes, read 200 bytes at a time) to a request that asks for a stream."""

    def __init__(self, stream: bytes = b"") -> None:
        self.stream = stream

    @asynccontextmanager
    async def open(self, provider: Any, request: Any, *, connect_timeout: float) -> Any:
        await trio.lowlevel.checkpoint()
        if self.stream and b'"stream":true' in request.body:
            yield InstantResponse(self.stream, 200)
        else:
            yield InstantResponse(COMPLETION)

    async def aclose(self) -> None:
        pass


async def asgi_request(app: Any, scope: dict[str, Any], body: bytes, send: Any) -> None:
    """One HTTP request into the ASGI ``app``: ``body`` in one message, then a client that
    never leaves (``receive`` waits forever)."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await trio.sleep_forever()
        raise AssertionError

    await app(scope, receive, send)
