"""The supervisor's exit status when its children are ended by the stop signal itself."""

from __future__ import annotations

import os
import signal
import sys
import threading

from trioproxy.server.runner import Supervisor

START_TIMEOUT_S = 30.0


def test_a_child_ended_by_the_stop_signal_counts_as_a_clean_stop() -> None:
    # Children with SIGTERM's default action: what a serving process is after its signal
    # receiver closed (done and exiting) or before it opened (nothing served yet).
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    sup = Supervisor(sleeper, 1, 5.0, control=sleeper)
    started = threading.Event()
    before = signal.getsignal(signal.SIGTERM)

    def stop_once_started() -> None:
        # the supervisor runs in this (the main) thread: its signal handlers live there
        if started.wait(START_TIMEOUT_S):
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler takes it

    sup_start = sup._start

    def start(slot: object) -> None:
        sup_start(slot)  # type: ignore[arg-type]
        if all(s.proc is not None for s in sup.children):
            started.set()

    sup._start = start  # type: ignore[method-assign]
    killer = threading.Thread(target=stop_once_started)
    killer.start()
    status = sup.run()
    killer.join()
    assert started.is_set()
    assert [s.proc.returncode for s in sup.children if s.proc] == [-signal.SIGTERM] * 2
    assert status == 0
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
