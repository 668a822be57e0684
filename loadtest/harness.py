"""A Locust-shaped load generator on Trio, for SSE streams through the gateway.

Why not Locust itself: it runs on gevent with requests/geventhttpclient, one greenlet per
user, and parses every chunk in Python; 1,000 concurrent SSE streams of ~54 events/s each
are ~54,000 chunks/s, more than one core of Locust, on a 2-core box where one core is the
gateway's and the other is shared by the simulator and the client (see loadtest/README.md,
"harness"). So this keeps Locust's shape (user classes with a weight, tasks with weights,
``wait_time``, ``users`` / ``spawn_rate`` / ``run_time``, a live stats table, CSV and
JSON output, exit code from thresholds) on Trio tasks with one keep-alive connection
per user, responses parsed by httptools (``trioproxy.upstream.http1``).

    class Chat(User):
        weight = 3
        wait_time = constant(0.5)

        @task(2)
        async def ask(self) -> None:
            await self.client.post("chat", "/v1/chat/completions", BODY)

Every run is bounded in time (``run_time`` plus a grace to finish or cut what is in
flight) and only talks to 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trio

from trioproxy.upstream.http1 import H1Connection, request_head

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
"""After run_time, how long in-flight requests may finish before they are cut."""


# ------------------------------------------------------------------ histograms


class Histogram:
    """Log-bucketed latencies in ms (1 % resolution from 0.01 ms to ~1,000 s)."""

    __slots__ = ("buckets", "count", "total")
    _LOW = 0.01
    _STEP = math.log(1.01)

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0

    def add(self, ms: float) -> None:
        i = 0 if ms <= self._LOW else int(math.log(ms / self._LOW) / self._STEP) + 1
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        self.total += ms

    def percentile(self, q: float) -> float:
        if not self.count:
            return float("nan")
        want = q / 100 * self.count
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= want:
                return self._LOW if i == 0 else self._LOW * math.exp(i * self._STEP)
        return float("nan")


@dataclass
class Stats:
    name: str
    requests: int = 0
    done_in_window: int = 0
    """Requests that ended cleanly before run_time was up (for closed-loop rates)."""
    failures: int = 0
    broken: int = 0
    """Streams that started but did not end cleanly (error event, early close)."""
    events: int = 0
    ttft: Histogram = field(default_factory=Histogram)
    gap: Histogram = field(default_factory=Histogram)
    total: Histogram = field(default_factory=Histogram)
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.failures += 1
        self.errors[why] = self.errors.get(why, 0) + 1

    def row(self, seconds: float) -> dict[str, Any]:
        return {
            "name": self.name, "requests": self.requests, "failures": self.failures,
            "broken": self.broken, "req_per_s": self.requests / max(seconds, 1e-9),
            "done_in_window": self.done_in_window,
            "events": self.events, "events_per_s": self.events / max(seconds, 1e-9),
            "ttft_p50_ms": self.ttft.percentile(50), "ttft_p95_ms": self.ttft.percentile(95),
            "ttft_p99_ms": self.ttft.percentile(99), "gap_p50_ms": self.gap.percentile(50),
            "gap_p99_ms": self.gap.percentile(99), "total_p50_ms": self.total.percentile(50),
            "total_p99_ms": self.total.percentile(99), "errors": dict(self.errors),
        }  # fmt: skip


# ------------------------------------------------------------------ the client


class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, reopened when closed."""

    def __init__(self, port: int, headers: Sequence[tuple[str, str]], env: Environment) -> None:
        self.port = port
        self.headers = tuple(headers)
        self.env = env
        self._conn: H1Connection | None = None
        self.retry_after = 0.0
        """Seconds the last refusal (429/503) asked the caller to wait; 0 when none."""

    def _refused(self, conn: H1Connection) -> None:
        """Remember a 429/503's ``Retry-After`` (seconds, capped at 60 as the SDKs do)."""
        self.retry_after = 0.0
        if conn.status in (429, 503):
            try:
                self.retry_after = min(max(float(conn.headers.get("retry-after", "0")), 0.0), 60.0)
            except ValueError:
                pass

    async def _connection(self) -> H1Connection:
        if self._conn is None:
            stream = await trio.open_tcp_stream(HOST, self.port)
            self._conn = H1Connection(stream, stream.socket)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _exchange(
        self, path: str, body: bytes, extra: Sequence[tuple[str, str]]
    ) -> H1Connection:
        conn = await self._connection()
        headers = (*self.headers, ("content-type", "application/json"), *extra)
        await conn.send_request(request_head("POST", path, f"{HOST}:{self.port}", headers,
                                             len(body)), body)  # fmt: skip
        await conn.read_head()
        return conn

    async def post(self, name: str, path: str, body: bytes,
                   extra: Sequence[tuple[str, str]] = ()) -> int:  # fmt: skip
        """A non-stream request; TTFT = time to the response head, total = whole body."""
        stats = self.env.stats_for(name)
        t0 = time.perf_counter()
        try:
            conn = await self._exchange(path, body, extra)
            stats.ttft.add(1000 * (time.perf_counter() - t0))
            while await conn.receive():
                pass
        except (OSError, trio.BrokenResourceError, ValueError) as exc:
            self._drop()
            stats.requests += 1
            stats.fail(type(exc).__name__)
            return 0
        stats.requests += 1
        end = time.perf_counter()
        stats.total.add(1000 * (end - t0))
        self._refused(conn)
        if conn.status >= 400:
            stats.fail(f"HTTP {conn.status}")
        elif end <= self.env.window_end:
            stats.done_in_window += 1
        if not conn.reusable:
            self._drop()
        return conn.status

    async def stream(self, name: str, path: str, body: bytes,
                     extra: Sequence[tuple[str, str]] = ()) -> int:  # fmt: skip
        """An SSE request: TTFT to the first event, gaps between reads, total to the end."""
        stats = self.env.stats_for(name)
        t0 = time.perf_counter()
        last = 0.0
        events = 0
        carry = b""
        error = False
        try:
            conn = await self._exchange(path, body, extra)
            self._refused(conn)
            if conn.status >= 400:
                while await conn.receive():
                    pass
                stats.requests += 1
                stats.fail(f"HTTP {conn.status}")
                return conn.status
            while data := await conn.receive():
                now = time.perf_counter()
                n = (carry + data).count(b"\n\n")
                carry = data[-1:]
                if n:
                    if not events:
                        stats.ttft.add(1000 * (now - t0))
                    else:  # one gap per read that brought events (a pause the caller sees)
                        stats.gap.add(1000 * (now - last))
                    last = now
                    events += n
                if b'"error"' in data or b"event: error" in data:
                    error = True
        except (OSError, trio.BrokenResourceError, ValueError) as exc:
            self._drop()
            stats.requests += 1
            stats.events += events
            if events:
                stats.broken += 1
            stats.fail(type(exc).__name__)
            return 0
        stats.requests += 1
        stats.events += events
        end = time.perf_counter()
        stats.total.add(1000 * (end - t0))
        if error or not events:
            stats.broken += 1
            stats.fail("error event" if error else "no events")
        elif end <= self.env.window_end:
            stats.done_in_window += 1
        if not conn.reusable:
            self._drop()
        return 200


# ------------------------------------------------------------------ users and tasks


def task(
    weight: int = 1,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    def mark(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        fn.task_weight = weight  # type: ignore[attr-defined]
        return fn

    return mark


def constant(seconds: float) -> Callable[[], float]:
    return lambda: seconds


def between(low: float, high: float) -> Callable[[], float]:
    return lambda: random.uniform(low, high)


class User:
    """Subclass with ``@task`` methods; ``weight`` picks how many users are of this class."""

    weight: ClassVar[int] = 1
    wait_time: ClassVar[Callable[[], float]] = staticmethod(constant(0.0))
    headers: ClassVar[tuple[tuple[str, str], ...]] = ()
    honour_retry_after: ClassVar[bool] = True
    """Wait what a refusal's ``Retry-After`` says (times a 0.5-1.5 jitter) before the next
    task, as the official SDKs do; False makes a retry storm (each refusal retried at once)."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.client = Client(env.port, self.headers, env)

    @classmethod
    def tasks(cls) -> list[tuple[Callable[..., Awaitable[None]], int]]:
        found = []
        for name in dir(cls):
            fn = getattr(cls, name)
            if callable(fn) and hasattr(fn, "task_weight"):
                found.append((fn, fn.task_weight))
        return found

    async def run(self, stop_at: float) -> None:
        tasks = self.tasks()
        fns, weights = [t for t, _ in tasks], [w for _, w in tasks]
        while trio.current_time() < stop_at:
            await random.choices(fns, weights)[0](self)
            if self.honour_retry_after and self.client.retry_after > 0:
                await trio.sleep(self.client.retry_after * random.uniform(0.5, 1.5))
            if (wait := self.wait_time()) > 0:
                await trio.sleep(wait)
        self.client._drop()


# ------------------------------------------------------------------ the runner


@dataclass
class Thresholds:
    """``name<=value`` / ``name>=value`` / ``name==value`` on the totals row."""

    rules: list[tuple[str, str, float]] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> Thresholds:
        rules = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            for op in ("<=", ">=", "=="):
                if op in item:
                    key, value = item.split(op)
                    rules.append((key.strip(), op, float(value)))
                    break
            else:
                raise ValueError(f"bad threshold {item!r} (use <=, >= or ==)")
        return cls(rules)

    def check(self, row: dict[str, Any]) -> list[str]:
        failed = []
        for key, op, value in self.rules:
            got = row.get(key)
            if not isinstance(got, int | float) or math.isnan(got):
                failed.append(f"{key}: no value")
                continue
            ok = got <= value if op == "<=" else got >= value if op == ">=" else got == value
            if not ok:
                failed.append(f"{key}={got:.2f} (want {op} {value:g})")
        return failed


@dataclass
class Environment:
    port: int
    users: int
    spawn_rate: float
    run_time: float
    user_classes: Sequence[type[User]]
    stats: dict[str, Stats] = field(default_factory=dict)
    live_every_s: float = 2.0
    started: float = 0.0
    window_end: float = math.inf
    """perf_counter() at which run_time is up."""
    spawned: int = 0

    def stats_for(self, name: str) -> Stats:
        if (s := self.stats.get(name)) is None:
            s = self.stats[name] = Stats(name)
        return s

    def _classes(self) -> list[type[User]]:
        """``users`` classes in weight proportion, interleaved."""
        total = sum(c.weight for c in self.user_classes)
        picks: list[type[User]] = []
        for cls in self.user_classes:
            picks += [cls] * round(self.users * cls.weight / total)
        while len(picks) < self.users:
            picks.append(self.user_classes[0])
        random.Random(0).shuffle(picks)
        return picks[: self.users]

    def totals(self) -> dict[str, Any]:
        agg = Stats("Aggregated")
        for s in self.stats.values():
            agg.requests += s.requests
            agg.done_in_window += s.done_in_window
            agg.failures += s.failures
            agg.broken += s.broken
            agg.events += s.events
            for mine, theirs in ((agg.ttft, s.ttft), (agg.gap, s.gap), (agg.total, s.total)):
                for i, n in theirs.buckets.items():
                    mine.buckets[i] = mine.buckets.get(i, 0) + n
                mine.count += theirs.count
                mine.total += theirs.total
            for k, v in s.errors.items():
                agg.errors[k] = agg.errors.get(k, 0) + v
        return agg.row(self.elapsed())

    def elapsed(self) -> float:
        return max(1e-9, time.perf_counter() - self.started)

    def table(self) -> str:
        rows = [s.row(self.elapsed()) for s in self.stats.values()] + [self.totals()]
        head = (f"{'name':<16}{'reqs':>8}{'fails':>7}{'broken':>7}{'req/s':>8}{'ev/s':>9}"
                f"{'ttft50':>8}{'ttft99':>8}{'gap50':>7}{'gap99':>7}{'tot50':>8}{'tot99':>8}")  # fmt: skip
        lines = [f"[{self.elapsed():6.1f}s] users={self.spawned}", head]
        for r in rows:
            lines.append(
                f"{r['name']:<16}{r['requests']:>8}{r['failures']:>7}{r['broken']:>7}"
                f"{r['req_per_s']:>8.1f}{r['events_per_s']:>9.0f}{r['ttft_p50_ms']:>8.1f}"
                f"{r['ttft_p99_ms']:>8.1f}{r['gap_p50_ms']:>7.1f}{r['gap_p99_ms']:>7.1f}"
                f"{r['total_p50_ms']:>8.0f}{r['total_p99_ms']:>8.0f}"
            )
        return "\n".join(lines)

    async def run(self, *, quiet: bool = False) -> None:
        self.started = time.perf_counter()
        self.window_end = self.started + self.run_time
        t0 = trio.current_time()
        stop_at = t0 + self.run_time
        with trio.move_on_at(stop_at + STOP_GRACE_S):
            async with trio.open_nursery() as nursery:
                if not quiet:
                    nursery.start_soon(self._live, stop_at)
                async with trio.open_nursery() as users:
                    for i, cls in enumerate(self._classes()):
                        await trio.sleep_until(t0 + i / self.spawn_rate)
                        if trio.current_time() >= stop_at:
                            break
                        users.start_soon(cls(self).run, stop_at)
                        self.spawned += 1
                nursery.cancel_scope.cancel()

    async def _live(self, stop_at: float) -> None:
        while trio.current_time() < stop_at:
            await trio.sleep(self.live_every_s)
            print(self.table(), flush=True)


def write_outputs(env: Environment, csv_prefix: str | None, json_path: str | None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    rows = [s.row(env.elapsed()) for s in env.stats.values()] + [env.totals()]
    for path in (csv_prefix, json_path):  # ``--out /tmp/bench/acc``: the folder may be new
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if csv_prefix:
        with open(f"{csv_prefix}_stats.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "errors"])
            w.writeheader()
            for r in rows:
                w.writerow({k: v for k, v in r.items() if k != "errors"})
    out = {"elapsed_s": env.elapsed(), "users": env.spawned, "rows": rows, **(extra or {})}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return out


__all__ = ["Client", "Environment", "Histogram", "Stats", "Thresholds", "User",
           "between", "constant", "task", "write_outputs"]  # fmt: skip
