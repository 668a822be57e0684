"""``trioproxy serve``'s process model: bind first, then supervise the data-plane workers and
the control plane, each in its own process.

1. The data and admin ports are bound (``SO_REUSEPORT``) and claimed (``claim.py``: no
   second ``serve`` may join them) before anything is printed: a busy port is one line on
   stderr and exit status 2.
2. This process supervises ``--workers N`` data-plane worker processes
   (``python -m trioproxy.server.worker --no-admin``), each binding its own
   ``SO_REUSEPORT`` data socket so the kernel spreads connections across them, and one
   control-plane process (``python -m trioproxy.server.control``: the dashboard, admin
   API, ``/metrics`` and probes on the admin port; see ``control.py``), so a page render
   never runs on a data-plane event loop. This process keeps its bound sockets (never
   listening) and its claim so the ports stay taken while a child restarts. The same
   holds for one worker: N = 1 is one data-plane process beside the control plane.
   A child that dies is restarted with exponential backoff (a worker's live gauges are
   dropped from the shared metrics directory and its state file removed first, so a
   scrape sums and ``/readyz`` counts only live workers); ``MAX_FAST_FAILURES`` deaths in
   a row, each within ``STABLE_S`` of its start, stop the service with exit status 1
   (systemd's ``Restart=on-failure`` takes over). SIGTERM/SIGINT are forwarded as SIGTERM
   to the workers (each drains, see ``worker.py``), then, once they are gone, to the
   control plane (it serves ``/readyz`` 503 and ``/metrics`` through the drain); the exit
   status is 0 only if every child then exits 0 or by that SIGTERM (``STOPPED_CLEANLY``). SIGHUP is forwarded to every child (each
   reloads its config).

This process imports no gateway (``tests/test_layers.py``): the config, the sockets, Trio and
the workers' state files are all it holds (its RSS is the whole service's overhead).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from trioproxy.httpd.listen import PortBusy
from trioproxy.server.claim import claim_ports
from trioproxy.server.readiness import ENV_RUN_DIR, ReadyDir
from trioproxy.server.sockets import Bound, bind
from trioproxy.telemetry.metrics_dir import mark_worker_dead

if TYPE_CHECKING:
    from trioproxy.config.model import Settings

log = logging.getLogger("trioproxy")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0
"""A worker that lived this long resets its backoff."""
STOPPED_CLEANLY = (0, -signal.SIGTERM)
"""A child's exit codes that count as a clean stop once it was told to stop: 0, or ended by
the SIGTERM itself. A serving process catches SIGTERM while it has work (it drains, then
leaves its signal receiver); one the signal ends by default has none: not started serving
yet, or done and exiting when a second SIGTERM (a group signal, then this supervisor's)
arrives after its receiver closed."""
MAX_FAST_FAILURES = 5
STOP_MARGIN_S = 30.0
"""After SIGTERM: workers get ``shutdown_grace_s`` plus this (the flush) before SIGKILL."""


def serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    banner: Callable[[Bound], str],
    admin_port: int | None = None,
) -> int:
    """Run the service; the process exit status."""
    try:
        bound = bind(settings.server, host, port, admin_port=admin_port)
    except PortBusy as exc:
        print(f"trioproxy: {exc.strerror}", file=sys.stderr)
        return 2
    ports = [(host, bound.port)]
    if bound.admin_port is not None:
        ports.append((settings.server.admin_host, bound.admin_port))
    try:  # held until this process exits (the workers do not inherit it)
        claim = claim_ports(ports)
    except PortBusy as exc:
        bound.close()
        print(f"trioproxy: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        return _run(settings, host, workers, banner, bound)
    finally:
        for sock in claim:
            sock.close()


def _run(
    settings: Settings, host: str, workers: int, banner: Callable[[Bound], str], bound: Bound
) -> int:
    print(banner(bound), flush=True)
    worker = [sys.executable, "-m", "trioproxy.server.worker", "--host", host, "--port",
              str(bound.port), "--no-admin"]  # fmt: skip
    control = [sys.executable, "-m", "trioproxy.server.control", "--admin-port",
               str(bound.admin_port)]  # fmt: skip
    supervisor = Supervisor(worker, workers, settings.server.shutdown_grace_s, control=control)
    return trio.run(supervisor.run)


@dataclass
class _Slot:
    index: int
    cmd: list[str]
    name: str
    proc: trio.Process | None = None
    started: float = 0.0
    fast_failures: int = 0


class Supervisor:
    """N data-plane workers running ``cmd`` and, with ``control``, the control plane."""

    def __init__(
        self, cmd: list[str], workers: int, grace_s: float, *, control: list[str] | None = None
    ) -> None:
        self.slots = [_Slot(i, cmd, f"worker {i}") for i in range(workers)]
        self.control = None if control is None else _Slot(workers, control, "control plane")
        self.grace_s = grace_s
        self.stopping = False
        self.failed = False
        run_dir = os.environ.get(ENV_RUN_DIR)
        self.ready_dir = ReadyDir(run_dir) if run_dir else None

    @property
    def children(self) -> list[_Slot]:
        return self.slots + ([self.control] if self.control is not None else [])

    async def run(self) -> int:
        signals_wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        with trio.open_signal_receiver(*signals_wanted) as signals:
            async with trio.open_nursery() as nursery:
                for slot in self.children:
                    nursery.start_soon(self._keep_running, slot, nursery)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: forwarding to %d worker(s)%s", len(self.slots),
                                 " and the control plane" if self.control else "")  # fmt: skip
                        self._signal_all(signal.SIGHUP, self.children)
                        continue
                    log.info("%s: stopping the workers", signal.Signals(signum).name)
                    break
                await self._stop()
                nursery.cancel_scope.cancel()
        codes = [s.proc.returncode for s in self.children if s.proc is not None]
        if self.failed or any(code not in STOPPED_CLEANLY for code in codes):
            log.error("workers exited with %s", codes)
            return 1
        return 0

    async def _keep_running(self, slot: _Slot, nursery: trio.Nursery) -> None:
        while not self.stopping:
            slot.started = trio.current_time()
            slot.proc = await trio.lowlevel.open_process(slot.cmd)
            code = await slot.proc.wait()
            mark_worker_dead(slot.proc.pid)  # its live gauges no longer count in a scrape
            if self.ready_dir is not None:  # nor its state in /readyz
                await trio.to_thread.run_sync(self.ready_dir.remove, slot.proc.pid)
            if self.stopping:
                return
            lived = trio.current_time() - slot.started
            slot.fast_failures = slot.fast_failures + 1 if lived < STABLE_S else 1
            if slot.fast_failures > MAX_FAST_FAILURES:
                log.error("%s died %d times in a row; stopping the service",
                          slot.name, slot.fast_failures)  # fmt: skip
                self.failed = True
                nursery.start_soon(self._stop_and_exit, nursery)
                return
            delay = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** (slot.fast_failures - 1))
            log.error("%s (pid %d) exited with status %s; restarting in %.1f s",
                      slot.name, slot.proc.pid, code, delay)  # fmt: skip
            await trio.sleep(delay)

    @staticmethod
    def _signal_all(signum: int, slots: list[_Slot]) -> None:
        for slot in slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(signum)

    async def _stop(self) -> None:
        """The workers drain first; the control plane serves ``/readyz`` and ``/metrics``
        through their drain, then stops."""
        self.stopping = True
        for group in (self.slots, [self.control] if self.control is not None else []):
            self._signal_all(signal.SIGTERM, group)
            with trio.move_on_after(self.grace_s + STOP_MARGIN_S):
                for slot in group:
                    if slot.proc is not None:
                        await slot.proc.wait()
                continue
            log.error("%s still running after %.0f s; killing them",
                      ", ".join(s.name for s in group), self.grace_s + STOP_MARGIN_S)  # fmt: skip
            self._signal_all(signal.SIGKILL, group)
            self.failed = True
            for slot in group:
                if slot.proc is not None:
                    await slot.proc.wait()

    async def _stop_and_exit(self, nursery: trio.Nursery) -> None:
        await self._stop()
        nursery.cancel_scope.cancel()


__all__ = ["Supervisor", "serve"]
