"""``trioproxy serve``'s process model: bind first, then supervise the data-plane workers and
the control plane, each in its own process.

1. The data and admin ports are bound (``SO_REUSEPORT``) and claimed (``claim.py``: no
   second ``serve`` may join them) before anything is printed: a busy port is one line on
   stderr and exit status 2. Then one "starting" line; the banner (where to send requests,
   the demo key) only once every child accepts connections: each writes one byte down a
   pipe of its own (``ready_pipe.py``), read in :meth:`Supervisor._wait`.
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
   (systemd's ``Restart=on-failure`` takes over); so does one child, before the banner, that
   cannot open the state stores for the disk (``EXIT_STATE_DISK``: it logged one line
   naming the directory), at once: the same disk fails the next try too.
   SIGTERM/SIGINT are forwarded as SIGTERM to the workers (each drains, see ``worker.py``),
   then, once they are gone, to the control plane (it serves ``/readyz`` 503 and ``/metrics`` through the drain); the exit
   status is 0 only if every child then exits 0 or by that SIGTERM (``STOPPED_CLEANLY``). SIGHUP is forwarded to every child (each
   reloads its config).

This process imports no gateway and no event loop (``tests/test_layers.py``): the config, the
sockets and the workers' state files are all it holds (its RSS is the whole service's
overhead); its loop is ``select`` on a signal wake-up pipe (:class:`Supervisor`).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trioproxy.httpd.bind import PortBusy
from trioproxy.server.claim import claim_ports
from trioproxy.server.early_signals import reload_held
from trioproxy.server.ready_files import ENV_RUN_DIR, ReadyDir
from trioproxy.server.ready_pipe import ENV_READY_FD
from trioproxy.server.sockets import Bound, bind
from trioproxy.store.state_dir import EXIT_STATE_DISK
from trioproxy.telemetry.metrics_dir import mark_worker_dead

if TYPE_CHECKING:
    from trioproxy.server.plan import ServePlan

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
    plan: ServePlan,
    host: str,
    port: int,
    workers: int,
    banner: Callable[[Bound], str],
    admin_port: int | None = None,
    *,
    prepare: Callable[[], None] | None = None,
) -> int:
    """Run the service; the process exit status. ``prepare`` runs once the ports are bound
    and claimed, before any child starts (state a failed start must not leave behind)."""
    admin = plan.admin_port if admin_port is None else admin_port
    if admin == port != 0:  # two listeners on one port: the kernel would split its connections
        print(f"trioproxy: the admin port and the data port are both {port}: the dashboard and "
              "admin API need a port of their own (--admin-port, [server] admin_port)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        bound = bind(plan, host, port, admin_port=admin_port)
    except PortBusy as exc:
        print(f"trioproxy: {exc.strerror}", file=sys.stderr)
        return 2
    ports = [(host, bound.port)]
    if bound.admin_port is not None:
        ports.append((plan.admin_host, bound.admin_port))
    try:  # held until this process exits (the workers do not inherit it)
        claim = claim_ports(ports)
    except PortBusy as exc:
        bound.close()
        print(f"trioproxy: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if prepare is not None:
            prepare()
        return _run(plan, host, workers, banner, bound)
    finally:
        for sock in claim:
            sock.close()


def _run(
    plan: ServePlan, host: str, workers: int, banner: Callable[[Bound], str], bound: Bound
) -> int:
    scheme = "https" if plan.tls else "http"
    print(f"trioproxy starting on {scheme}://{host}:{bound.port} ({workers} worker(s)); "
          "the banner follows once every process accepts connections", flush=True)  # fmt: skip
    worker = [sys.executable, "-m", "trioproxy.server.worker", "--host", host, "--port",
              str(bound.port), "--no-admin"]  # fmt: skip
    control = [sys.executable, "-m", "trioproxy.server.control", "--admin-port",
               str(bound.admin_port)]  # fmt: skip
    supervisor = Supervisor(worker, workers, plan.shutdown_grace_s, control=control,
                            on_ready=lambda: print(banner(bound), flush=True))  # fmt: skip
    return supervisor.run()


HOLD_AFTER_S = 0.5
"""A child this young may not hold SIGHUP yet (its interpreter is starting): a reload waits."""


@dataclass
class _Slot:
    index: int
    cmd: list[str]
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    fast_failures: int = 0
    restart_at: float | None = None
    """When a dead child is started again (None: running, or not to be restarted)."""
    reload_at: float | None = None
    """When a SIGHUP that came while the child was too young to hold it is passed on."""
    ready_fd: int = -1
    """The read end of the pipe the running child writes a byte to once it accepts
    connections (``ready_pipe.py``); -1 once it wrote or closed it."""
    ready: bool = False
    """It accepted connections once (then the banner may count it)."""


def _ignore(signum: int, frame: object) -> None:
    """The signals :meth:`Supervisor.run` waits for arrive through its wake-up pipe."""


class Supervisor:
    """N data-plane workers running ``cmd`` and, with ``control``, the control plane.

    A plain loop over ``select`` (no event loop: Trio alone is ~14 MB of this process's RSS):
    the signals it handles, SIGCHLD included, wake it through ``signal.set_wakeup_fd``, the
    restart delays are its timeouts. :meth:`run` runs in the main thread (signal handlers)."""

    def __init__(
        self, cmd: list[str], workers: int, grace_s: float, *, control: list[str] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """``on_ready``: called once, when every child has accepted connections (the
        banner)."""
        self.slots = [_Slot(i, cmd, f"worker {i}") for i in range(workers)]
        self.control = None if control is None else _Slot(workers, control, "control plane")
        self.grace_s = grace_s
        self.stopping = False
        self.failed = False
        run_dir = os.environ.get(ENV_RUN_DIR)
        self.ready_dir = ReadyDir(run_dir) if run_dir else None
        self._wake = -1
        self.on_ready = on_ready

    @property
    def children(self) -> list[_Slot]:
        return self.slots + ([self.control] if self.control is not None else [])

    def run(self) -> int:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        wake, wake_w = os.pipe()  # (non-inheritable: the children do not get them)
        os.set_blocking(wake, False)
        os.set_blocking(wake_w, False)
        old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        old = {signum: signal.signal(signum, _ignore) for signum in wanted}
        self._wake = wake
        try:
            self._supervise()
            self._stop()
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(old_fd)
            os.close(wake)
            os.close(wake_w)
            for slot in self.children:
                self._close_ready(slot)
        codes = [s.proc.returncode for s in self.children if s.proc is not None]
        if self.failed or any(code not in STOPPED_CLEANLY for code in codes):
            log.error("workers exited with %s", codes)
            return 1
        return 0

    def _supervise(self) -> None:
        """Keep every child running until SIGTERM/SIGINT or too many fast deaths."""
        for slot in self.children:
            self._start(slot)
        if reload_held():  # a reload while this process was starting: its children's turn
            self._reload_all(time.monotonic())
        while True:
            self._reap()
            if self.failed:
                return
            now = time.monotonic()
            for slot in self.children:
                if slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot)
            self._pass_reloads(now)
            pending = [s.restart_at for s in self.children if s.restart_at is not None]
            pending += [s.reload_at for s in self.children if s.reload_at is not None]
            for signum in self._wait(max(0.0, min(pending) - now) if pending else None):
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: forwarding to %d worker(s)%s", len(self.slots),
                             " and the control plane" if self.control else "")  # fmt: skip
                    self._reload_all(time.monotonic())
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    log.info("%s: stopping the workers", signal.Signals(signum).name)
                    return

    def _reload_all(self, now: float) -> None:
        """SIGHUP to every child, or, to one started less than :data:`HOLD_AFTER_S` ago (its
        interpreter may not hold SIGHUP yet: :mod:`~trioproxy.server.early_signals`), once it
        is that old."""
        for slot in self.children:
            slot.reload_at = max(now, slot.started + HOLD_AFTER_S)
        self._pass_reloads(now)

    def _pass_reloads(self, now: float) -> None:
        for slot in self.children:
            if slot.reload_at is not None and slot.reload_at <= now:
                slot.reload_at = None
                self._signal_all(signal.SIGHUP, [slot])

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.started = time.monotonic()
        self._close_ready(slot)
        r, w = os.pipe()
        try:
            slot.proc = subprocess.Popen(slot.cmd, pass_fds=(w,),
                                         env={**os.environ, ENV_READY_FD: str(w)})  # fmt: skip
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        slot.ready_fd = r

    @staticmethod
    def _close_ready(slot: _Slot) -> None:
        if slot.ready_fd >= 0:
            os.close(slot.ready_fd)
            slot.ready_fd = -1

    def _wait(self, timeout: float | None) -> list[int]:
        """The signals received, after waiting at most ``timeout`` s for one; a child's
        readiness byte (or its pipe's end: it died first) is taken on the way."""
        waiting = {s.ready_fd: s for s in self.children if s.ready_fd >= 0}
        readable, _, _ = select.select([self._wake, *waiting], [], [], timeout)
        for fd in readable:
            if fd in waiting:
                slot = waiting[fd]
                slot.ready = slot.ready or bool(os.read(fd, 16))
                self._close_ready(slot)
        if self.on_ready is not None and not self.stopping and all(s.ready for s in self.children):
            announce, self.on_ready = self.on_ready, None
            announce()
        try:
            return list(os.read(self._wake, 512))
        except BlockingIOError:
            return []

    def _reap(self) -> None:
        """Each child that died since the last look: its traces removed; while serving, its
        restart planned with backoff, or the service failed after too many fast deaths."""
        now = time.monotonic()
        for slot in self.children:
            proc = slot.proc
            if proc is None or slot.restart_at is not None or proc.returncode is not None:
                continue
            code = proc.poll()
            if code is None:
                continue
            mark_worker_dead(proc.pid)  # its live gauges no longer count in a scrape
            if self.ready_dir is not None:  # nor its state in /readyz
                self.ready_dir.remove(proc.pid)
            if self.stopping or self.failed:
                continue
            if code == EXIT_STATE_DISK and self.on_ready is not None:  # at start: it said why
                log.error("%s cannot open the state stores (see its line); stopping the "
                          "service", slot.name)  # fmt: skip
                self.failed = True
                continue
            lived = now - slot.started
            slot.fast_failures = slot.fast_failures + 1 if lived < STABLE_S else 1
            if slot.fast_failures > MAX_FAST_FAILURES:
                log.error("%s died %d times in a row; stopping the service",
                          slot.name, slot.fast_failures)  # fmt: skip
                self.failed = True
                continue
            delay = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** (slot.fast_failures - 1))
            log.error("%s (pid %d) exited with status %s; restarting in %.1f s",
                      slot.name, proc.pid, code, delay)  # fmt: skip
            slot.restart_at = now + delay

    @staticmethod
    def _signal_all(signum: int, slots: list[_Slot]) -> None:
        for slot in slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(signum)

    def _stop(self) -> None:
        """The workers drain first; the control plane serves ``/readyz`` and ``/metrics``
        through their drain, then stops."""
        self.stopping = True
        for group in (self.slots, [self.control] if self.control is not None else []):
            self._signal_all(signal.SIGTERM, group)
            deadline = time.monotonic() + self.grace_s + STOP_MARGIN_S
            while True:
                self._reap()
                if all(s.proc is None or s.proc.returncode is not None for s in group):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("%s still running after %.0f s; killing them",
                              ", ".join(s.name for s in group),
                              self.grace_s + STOP_MARGIN_S)  # fmt: skip
                    self._signal_all(signal.SIGKILL, group)
                    self.failed = True
                    for slot in group:
                        if slot.proc is not None:
                            slot.proc.wait()
                    self._reap()
                    break
                self._wait(left)  # (further stop signals change nothing)


__all__ = ["Supervisor", "serve"]
