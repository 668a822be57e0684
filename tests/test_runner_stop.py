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


def test_a_child_that_cannot_open_the_state_stores_at_start_stops_the_service() -> None:
    """A worker whose stores cannot open for the disk at start (exit status 74, one line
    saying why) was started 6 times, then the service stopped; it stops at the first."""
    from trioproxy.store.state_dir import EXIT_STATE_DISK

    failing = [sys.executable, "-c", f"import sys; sys.exit({EXIT_STATE_DISK})"]
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    sup = Supervisor(failing, 1, 5.0, control=sleeper, on_ready=lambda: None)
    starts: list[str] = []
    sup_start = sup._start

    def start(slot: object) -> None:
        starts.append(slot.name)  # type: ignore[attr-defined]
        sup_start(slot)  # type: ignore[arg-type]

    sup._start = start  # type: ignore[method-assign]
    assert sup.run() == 1
    assert starts == ["worker 0", "control plane"]
