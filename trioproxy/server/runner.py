"""``trioproxy serve``'s process model: bind first, then one worker or a supervisor of N.

1. The data and admin ports are bound (``SO_REUSEPORT``) and claimed (``claim.py``: no
   second ``serve`` may join them) before anything is printed: a busy port is one line on
   stderr and exit status 2.
2. ``--workers 1``: the worker runs in this process (``worker.run_worker``).
3. ``--workers N``: this process supervises N worker processes
   (``python -m trioproxy.server.worker``), each binding its own ``SO_REUSEPORT``
   sockets so the kernel spreads connections across them; this process keeps its
   bound sockets (never listening) and its claim so the ports stay taken while workers
   restart.
   A worker that dies is restarted with exponential backoff (its live gauges are dropped
   from the shared metrics directory first, so a scrape sums only live workers); ``MAX_FAST_FAILURES``
   deaths in a row, each within ``STABLE_S`` of its start, stop the service with
   exit status 1 (systemd's ``Restart=on-failure`` takes over). SIGTERM/SIGINT are
   forwarded as SIGTERM (each worker drains, see ``worker.py``); the exit status is 0
   only if every worker then exits 0. SIGHUP is forwarded (each worker reloads).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from trioproxy.config.model import Settings
from trioproxy.edge.app import Gateway
from trioproxy.edge.metrics import mark_worker_dead
from trioproxy.httpd import PortBusy
from trioproxy.server.claim import claim_ports
from trioproxy.server.worker import Bound, bind, run_worker

log = logging.getLogger("trioproxy")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0
"""A worker that lived this long resets its backoff."""
MAX_FAST_FAILURES = 5
STOP_MARGIN_S = 30.0
"""After SIGTERM: workers get ``shutdown_grace_s`` plus this (the flush) before SIGKILL."""


def serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    banner: Callable[[Bound], str],
    build: Callable[[], Gateway],
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
        return _run(settings, host, workers, banner, build, bound)
    finally:
        for sock in claim:
            sock.close()


def _run(
    settings: Settings,
    host: str,
    workers: int,
    banner: Callable[[Bound], str],
    build: Callable[[], Gateway],
    bound: Bound,
) -> int:
    print(banner(bound), flush=True)
    if workers == 1:
        trio.run(partial(run_worker, build, bound))
        return 0
    cmd = [sys.executable, "-m", "trioproxy.server.worker", "--host", host, "--port",
           str(bound.port), "--admin-port", str(bound.admin_port)]  # fmt: skip
    return trio.run(Supervisor(cmd, workers, settings.server.shutdown_grace_s).run)


@dataclass
class _Slot:
    index: int
    proc: trio.Process | None = None
    started: float = 0.0
    fast_failures: int = 0


class Supervisor:
    def __init__(self, cmd: list[str], workers: int, grace_s: float) -> None:
        self.cmd = cmd
        self.slots = [_Slot(i) for i in range(workers)]
        self.grace_s = grace_s
        self.stopping = False
        self.failed = False

    async def run(self) -> int:
        signals_wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        with trio.open_signal_receiver(*signals_wanted) as signals:
            async with trio.open_nursery() as nursery:
                for slot in self.slots:
                    nursery.start_soon(self._keep_running, slot, nursery)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: forwarding to %d worker(s)", len(self.slots))
                        self._signal_all(signal.SIGHUP)
                        continue
                    log.info("%s: stopping the workers", signal.Signals(signum).name)
                    break
                await self._stop()
                nursery.cancel_scope.cancel()
        codes = [s.proc.returncode for s in self.slots if s.proc is not None]
        if self.failed or any(code != 0 for code in codes):
            log.error("workers exited with %s", codes)
            return 1
        return 0

    async def _keep_running(self, slot: _Slot, nursery: trio.Nursery) -> None:
        while not self.stopping:
            slot.started = trio.current_time()
            slot.proc = await trio.lowlevel.open_process(self.cmd)
            code = await slot.proc.wait()
            mark_worker_dead(slot.proc.pid)  # its live gauges no longer count in a scrape
            if self.stopping:
                return
            lived = trio.current_time() - slot.started
            slot.fast_failures = slot.fast_failures + 1 if lived < STABLE_S else 1
            if slot.fast_failures > MAX_FAST_FAILURES:
                log.error("worker %d died %d times in a row; stopping the service",
                          slot.index, slot.fast_failures)  # fmt: skip
                self.failed = True
                nursery.start_soon(self._stop_and_exit, nursery)
                return
            delay = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** (slot.fast_failures - 1))
            log.error("worker %d (pid %d) exited with status %s; restarting in %.1f s",
                      slot.index, slot.proc.pid, code, delay)  # fmt: skip
            await trio.sleep(delay)

    def _signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(signum)

    async def _stop(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        with trio.move_on_after(self.grace_s + STOP_MARGIN_S):
            for slot in self.slots:
                if slot.proc is not None:
                    await slot.proc.wait()
            return
        log.error("workers still running after %.0f s; killing them", self.grace_s + STOP_MARGIN_S)
        self._signal_all(signal.SIGKILL)
        self.failed = True
        for slot in self.slots:
            if slot.proc is not None:
                await slot.proc.wait()

    async def _stop_and_exit(self, nursery: trio.Nursery) -> None:
        await self._stop()
        nursery.cancel_scope.cancel()


__all__ = ["Supervisor", "serve"]
