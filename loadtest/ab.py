"""Interleaved A/B of gateway commits: the same load, one gateway at a time, several rounds.

    .venv/bin/python loadtest/ab.py 69bb8d5 f8157a8 [--rounds 3] [--users 1000] [--seconds 10]
        [--non-stream]

On a shared machine one run's CPU per event swings ±20 % with other people's load; running
the commits in turn (A, B, A, B, ...) under the same conditions and comparing medians makes
the *ratio* trustworthy even when the absolute figures are not. Each run is exactly one
``dataplane.py`` row of the new path: the load-mode simulator and the client on CPU 1, the
gateway (one worker, auth and a team budget on) pinned to CPU 0; ``--users`` concurrent
54-event streams, or with ``--non-stream`` wrk at ``--users`` connections. Prints every run
(CPU µs per event or per request, per second, TTFT, foreign load) and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics

import common
from dataplane import start_relay, stream_row, wrk_row
from scenarios import start_load_sim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("commits", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--non-stream", action="store_true")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    cpu: dict[str, list[float]] = {c: [] for c in args.commits}
    for n in range(args.rounds):
        for commit in args.commits:
            wd = common.workdir()
            sim = start_load_sim(wd, "sim", cpu=1)
            try:
                relay = start_relay("new", commit, wd, sim)
                try:
                    if args.non_stream:
                        row = wrk_row(relay, sim, wd, args.seconds)
                    else:
                        row = stream_row(relay, sim, args.users, args.seconds)
                finally:
                    relay.stop()
            finally:
                sim.stop()
            cpu[commit].append(row["cpu_us_per_event"])
            print(f"{commit} round {n}: {row['cpu_us_per_event']:.1f} µs, {row['per_s']:.1f}/s, "
                  f"TTFT {row['ttft_p50_ms']:.0f}/{row['ttft_p99_ms']:.0f} ms, "
                  f"broken {row['broken']}, foreign {row['foreign_pct']:.0f} %", flush=True)  # fmt: skip
    for commit, values in cpu.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{commit}: median {statistics.median(values):.1f} µs ({runs})")


if __name__ == "__main__":
    main()
