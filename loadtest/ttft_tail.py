"""Where the TTFT tail at 1,000 streams comes from (issue 8): connect, accept or serving.

    .venv/bin/python loadtest/ttft_tail.py [--relay new|floor] [--commit HEAD] [--users 1000]
        [--seconds 15] [--shed]

The ``dataplane.py`` set-up (load-mode simulator and client on CPU 1, the relay on CPU 0,
auth and a team budget), with the TTFT of each user's *first* request (it opens the
connection: TCP connect, the kernel's accept queue, the gateway's accept) kept apart from
the TTFT of the later requests on a kept-alive connection (admission, upstream, relay). The
listening socket's accept queue (``ss``'s Recv-Q, connections the kernel completed that the
relay has not accepted) is sampled every 50 ms. ``--shed`` runs the gateway with the
shedding defaults (``max_in_flight`` 280, ``queue_max`` 80, ``queue_timeout_s`` 0.5)
instead of the bench's 4,096; refused requests (503) are counted, not timed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

import common
import dataplane
import trio
from harness import Environment, User, task
from scenarios import start_load_sim


class Tail(User):
    headers = dataplane.AUTH

    @task()
    async def stream(self) -> None:
        first = self.client._conn is None
        name = "first" if first else "kept-alive"
        t0 = time.perf_counter()
        await self.client.stream(name, "/v1/chat/completions", dataplane.STREAM)
        if first:
            self.env.first_done.append((t0 - self.env.started, time.perf_counter() - t0))


def accept_queue(port: int) -> int:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
    return sum(int(line.split()[1]) for line in out.stdout.splitlines() if line.strip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relay", default="new", choices=["new", "floor"])
    p.add_argument("--commit", default="HEAD")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--shed", action="store_true")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=1)
    if args.shed:
        real = dataplane.config

        def shed_config(wd: Path, sim_url: str, commit: str) -> Path:
            path = real(wd, sim_url, commit)
            path.write_text(path.read_text().replace("max_in_flight = 4096\n", ""))
            return path

        dataplane.config = shed_config
    try:
        relay = dataplane.start_relay(args.relay, args.commit, wd, sim)
        try:
            env = Environment(relay.port, args.users, spawn_rate=1000.0, run_time=args.seconds,
                              user_classes=[Tail])  # fmt: skip
            env.first_done = []  # type: ignore[attr-defined]
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                t0 = time.perf_counter()
                while not stop.is_set():
                    samples.append((time.perf_counter() - t0, accept_queue(relay.port)))
                    stop.wait(0.05)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            with common.Meter({"gateway": relay.pgid, "sim": sim.pgid}, sample_s=0.5) as meter:
                trio.run(lambda: env.run(quiet=True))
            stop.set()
            th.join()
        finally:
            relay.stop()
    finally:
        sim.stop()
    print(f"relay {args.relay} ({args.commit}), {args.users} users, {args.seconds:g} s, "
          f"shedding {'defaults' if args.shed else 'off (max_in_flight 4096)'}; "
          f"busy {meter.busy_pct:.0f} % foreign {meter.foreign_pct:.0f} %")  # fmt: skip
    for name, s in env.stats.items():
        print(f"  {name:>10}: {s.requests} requests, {s.failures} failed {dict(s.errors)}, "
              f"TTFT p50 {s.ttft.percentile(50):,.1f} p90 {s.ttft.percentile(90):,.1f} "
              f"p99 {s.ttft.percentile(99):,.1f} max-ish {s.ttft.percentile(100):,.1f} ms")  # fmt: skip
    t = env.totals()
    print(f"  all: TTFT p50 {t['ttft_p50_ms']:,.1f} p99 {t['ttft_p99_ms']:,.1f} ms, "
          f"{t['done_in_window'] / args.seconds:.1f} streams/s, broken {t['broken']}, "
          f"{1e6 * meter.cpu['gateway'] / max(1, t['events']):.1f} µs/event")  # fmt: skip
    peak = max(samples, key=lambda s: s[1]) if samples else (0.0, 0)
    nonzero = [s for s in samples if s[1] > 0]
    last = nonzero[-1][0] if nonzero else 0.0
    print(f"  accept queue: peak {peak[1]} at {peak[0]:.2f} s, last non-empty at {last:.2f} s; "
          + " ".join(f"{t:.1f}s:{n}" for t, n in samples[::10]))  # fmt: skip
    firsts = sorted(env.first_done)  # type: ignore[attr-defined]
    slow = [(s, d) for s, d in firsts if d > 1.0]
    print(f"  first requests over 1 s: {len(slow)} of {len(firsts)}; started at (s): "
          + " ".join(f"{s:.2f}" for s, _ in slow[:20]))  # fmt: skip


if __name__ == "__main__":
    main()
