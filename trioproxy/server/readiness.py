"""The data-plane workers' state, as the control-plane process sees it: one small file each.

``trioproxy serve`` makes a run directory (``$RUNTIME_DIRECTORY`` or a temp dir, removed
at exit) and hands it to every process it starts (``TRIOPROXY_RUN_DIR``). Under its
``ready/`` each data-plane worker keeps one file named by its pid: ready or not, why not,
requests in flight (:func:`reporter`, a service of the worker's app: it looks every
:data:`REPORT_S` and writes only when something changed, by rename, so a reader never sees
half a file; a clean stop removes it, and the supervisor removes a dead worker's). The
control-plane process reads the directory every :data:`REPORT_S` (:class:`DataPlaneView`)
and answers ``/readyz`` and the dashboard's "in flight" and stale banner from it.

Why files: the processes share a host and a parent, the state is a few bytes per worker,
and a file needs no server that could itself be down (the admin store's heartbeats are
per instance, every 2 s, and meant for people: the banner). The data port's own
``/readyz`` stays each worker's truth for a load balancer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from trioproxy.edge.app import DRAINING
from trioproxy.edge.services import Service
from trioproxy.server.ready_files import ENV_RUN_DIR, ReadyDir, WorkerState

log = logging.getLogger(__name__)

REPORT_S = 0.5
"""How often a worker looks at its own state (at once when its drain starts)."""
VIEW_S = 0.1
"""How often the control plane reads the directory (a listing and a few small files, in a
thread): its ``/readyz`` turns 503 within this of a worker's drain."""
REMOVE_TIMEOUT_S = 1.0


def reporter(
    ready_dir: ReadyDir, state: Callable[[], tuple[bool, str]], in_flight: Callable[[], int],
    nudge: trio.Event | None = None,
) -> Service:  # fmt: skip
    """A worker's service: its state in ``ready_dir`` while it runs, removed when it stops;
    re-read every :data:`REPORT_S`, and at once when ``nudge`` is set (the drain's start: a
    load balancer asking the admin port must not wait for the next look)."""

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        pid = os.getpid()
        last: WorkerState | None = None
        task_status.started()
        try:
            while True:
                now = WorkerState(pid, *state(), in_flight())
                if now != last:
                    await trio.to_thread.run_sync(ready_dir.write, now)
                    last = now
                if nudge is not None and not nudge.is_set():
                    with trio.move_on_after(REPORT_S):
                        await nudge.wait()
                else:
                    await trio.sleep(REPORT_S)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(REMOVE_TIMEOUT_S):
                await trio.to_thread.run_sync(ready_dir.remove, pid, abandon_on_cancel=True)

    return run


class DataPlaneView:
    """The control plane's view of the workers, re-read every :data:`VIEW_S` (a service)."""

    def __init__(self, ready_dir: ReadyDir) -> None:
        self.ready_dir = ready_dir
        self.workers: list[WorkerState] = []
        self._saw_drain = False
        """A worker reported its drain: the group is stopping (a drained worker is not
        restarted), also once the workers are gone and before this process is told."""
        self.changed = trio.Event()
        """Set at every re-read (tests wait on it)."""

    @property
    def ready(self) -> bool:
        """At least one worker reports, and every one that reports is ready."""
        return bool(self.workers) and all(w.ready for w in self.workers)

    @property
    def detail(self) -> str:
        if not self.workers:
            return "no data-plane worker is running"
        return "; ".join(f"worker {w.pid}: {w.detail}" for w in self.workers if not w.ready)

    @property
    def draining(self) -> bool:
        """A worker has reported its drain: the group is stopping (also once the drained
        workers are gone)."""
        return self._saw_drain

    def _read(self, workers: list[WorkerState]) -> None:
        self.workers = workers
        if any(w.detail == DRAINING for w in workers):
            self._saw_drain = True

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._read(await trio.to_thread.run_sync(self.ready_dir.read))
        task_status.started()
        while True:
            await trio.sleep(VIEW_S)
            self._read(await trio.to_thread.run_sync(self.ready_dir.read))
            self.changed.set()
            self.changed = trio.Event()


__all__ = [
    "ENV_RUN_DIR",
    "REPORT_S",
    "VIEW_S",
    "DataPlaneView",
    "ReadyDir",
    "WorkerState",
    "reporter",
]
