"""The supervisor's exit status when its children are ended by the stop signal itself."""

from __future__ import annotations

import os
import signal
import sys

import trio

from trioproxy.server.runner import Supervisor


async def test_a_child_ended_by_the_stop_signal_counts_as_a_clean_stop() -> None:
    # Children with SIGTERM's default action: what a serving process is after its signal
    # receiver closed (done and exiting) or before it opened (nothing served yet).
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    sup = Supervisor(sleeper, 1, 5.0, control=sleeper)
    status: list[int] = []

    async def run() -> None:
        status.append(await sup.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(30):
            while any(s.proc is None for s in sup.children):
                await trio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's receiver takes it
    assert [s.proc.returncode for s in sup.children if s.proc] == [-signal.SIGTERM] * 2
    assert status == [0]
