"""Idle RSS of each process of ``trioproxy serve``, with dataplane.py's config and one worker.

    .venv/bin/python loadtest/serve_rss.py [--commit HEAD] [--wait 5]

Starts the load-mode simulator and the gateway as ``dataplane.py`` does (one worker pinned
to CPU 0), waits ``--wait`` seconds after the data port's ``/healthz`` answered, sends no
request, and prints per process (``common.serve_role``: the supervisor is ``main``) its
``VmRSS`` and, from ``/proc/PID/smaps_rollup``, its PSS and the anonymous and file-backed
parts of its RSS (the file-backed part is the interpreter and the shared libraries, counted
again in every process by a sum of RSS); then the group's resident memory with every physical
page counted once (``common.resident_mb``, as root).
"""

from __future__ import annotations

import argparse
import time

import common
import dataplane
from scenarios import start_load_sim


def rollup(pid: int) -> dict[str, float]:
    """``smaps_rollup``'s fields in MB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        lines = f.read().splitlines()[1:]
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default="HEAD")
    p.add_argument("--wait", type=float, default=5.0)
    args = p.parse_args()
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=1)
    try:
        relay = dataplane.start_relay("new", args.commit, wd, sim)
        try:
            time.sleep(args.wait)
            print("| process | RSS MB | PSS MB | anon MB | file-backed MB |")
            print("|---|---|---|---|---|")
            total = 0.0
            for pid in sorted(common.group_pids(relay.pgid)):
                role = common.serve_role(pid, relay.pgid)
                r = rollup(pid)
                total += common.pid_rss_mb(pid)
                print(f"| {'supervisor' if role == 'main' else role} | "
                      f"{common.pid_rss_mb(pid):.1f} | {r['Pss']:.1f} | {r['Anonymous']:.1f} | "
                      f"{r['Rss'] - r['Anonymous']:.1f} |")  # fmt: skip
            print(f"| group (sum of RSS) | {total:.1f} | | | |")
            t0 = time.perf_counter()
            once = common.resident_mb(common.group_pids(relay.pgid))
            took = 1e3 * (time.perf_counter() - t0)
            print(f"| group (each page once) | {once if once is None else f'{once:.1f}'} "
                  f"| | | | ({took:.0f} ms to read the page maps)")  # fmt: skip
        finally:
            relay.stop()
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
