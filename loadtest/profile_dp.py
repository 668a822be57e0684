"""py-spy profiles of the gateway under the data-plane loads (issue 8), one commit.

    .venv/bin/python loadtest/profile_dp.py [--commit HEAD] [--seconds 12] [--out /tmp/dp/prof]
        [--loads nonstream 1000 100]

The same set-up as ``dataplane.py`` (load-mode simulator and client on CPU 1, gateway on
CPU 0, auth and a team budget on); for each load py-spy records the gateway's worker at
100 Hz from 2 s in, and ``overhead.summarize_profile`` prints self and inclusive shares.
Also prints each load's row (CPU per event / per request) as ``dataplane.py`` does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import common
import dataplane
from overhead import summarize_profile
from scenarios import start_load_sim


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of process ``pid`` ("main" for its
    main thread; same-named threads summed)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        key = "main" if task.name == str(pid) else name
        out[key] = out.get(key, 0.0) + cpu
    return out


def spy(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    argv = [str(common.VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "100",
            "--duration", str(seconds), "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(["bash", "-c", f"sleep 2; exec {' '.join(argv)}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default="HEAD")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/dp/prof"))
    p.add_argument("--loads", nargs="+", default=["nonstream", "1000", "100"])
    p.add_argument("--no-spy", action="store_true", help="rows only (no py-spy overhead)")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})
    args.out.mkdir(parents=True, exist_ok=True)
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=1)
    try:
        relay = dataplane.start_relay("new", args.commit, wd, sim)
        try:
            pid = common.data_plane_pid(relay.pgid)
            for load in args.loads:
                raw = args.out / f"{load}.collapsed"
                proc = None if args.no_spy else spy(pid, raw, int(args.seconds - 3))
                before = thread_cpu(pid)
                if load == "nonstream":
                    row = dataplane.wrk_row(relay, sim, wd, args.seconds)
                else:
                    row = dataplane.stream_row(relay, sim, int(load), args.seconds)
                after = thread_cpu(pid)
                print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()},
                      flush=True)  # fmt: skip
                units = max(1, row["events"])
                per = {k: 1e6 * (after[k] - before.get(k, 0.0)) / units for k in after}
                print("  CPU µs per " + ("request" if load == "nonstream" else "event")
                      + " by thread: " + ", ".join(f"{k} {v:,.1f}" for k, v in
                      sorted(per.items(), key=lambda kv: -kv[1]) if v > 0), flush=True)  # fmt: skip
                if proc is not None:
                    proc.wait(timeout=60)
                    time.sleep(0.2)
                    if raw.exists():
                        text = summarize_profile(raw, top=40)
                        (args.out / f"{load}.txt").write_text(text + "\n")
                        print(text, flush=True)
        finally:
            relay.stop()
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
