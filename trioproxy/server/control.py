"""The control-plane process: the dashboard, the JSON admin API, ``/metrics``, ``/healthz``
and ``/readyz`` on the admin port, away from the data plane's event loops.

``trioproxy serve`` starts it beside the data-plane workers and supervises it as it does
them (``runner.py``: restarted with backoff, SIGTERM stops it, SIGHUP reloads its config).
It serves no ``/v1``: a page render here costs the proxy nothing (loadtest/README.md,
"viewer"). What it shows and changes lives in state every process shares:

* budgets, breakers: the budget and breaker stores (SQLite under ``state_dir``, or Redis);
  an edit or a breaker reset takes effect on every worker (breakers: within ``sync_s``);
* keys, users, audit, alerts, heartbeats: the admin store;
* cache flush / delete: commands in the admin store that every worker applies
  (``cache_commands.py``); no embedder or vector index is loaded here;
* spend, requests, traffic: the ledger's roll-ups (read through its own ledger service);
* ``/metrics``: the per-run multiprocess directory every worker writes (summed here);
* ``/readyz`` and "in flight": the workers' state files (``readiness.py``).

``python -m trioproxy.server.control --admin-port P`` (the config from the environment, as
for a worker: ``factory.py``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from functools import partial
from typing import Any

import trio

from trioproxy.edge.app import Gateway
from trioproxy.edge.services import NamedService
from trioproxy.httpd import PortBusy, open_tcp_socket
from trioproxy.server.admin import AdminApp
from trioproxy.server.readiness import DataPlaneView
from trioproxy.server.ready_pipe import tell_supervisor
from trioproxy.server.worker import obey, serve_admin
from trioproxy.telemetry.logs import log_uncaught

log = logging.getLogger("trioproxy")
DRAIN_MARGIN_S = 30.0
"""After SIGTERM, the longest wait for the workers to drain: ``shutdown_grace_s`` + this."""


class ControlGateway(Gateway):
    """The gateway object the dashboard reads, in the control-plane process: the same stores
    as the workers'; its readiness and in-flight count are the data plane's."""

    def __init__(self, settings: Any, *, data_plane: DataPlaneView, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.data_plane = data_plane
        self.services.add(NamedService("data-plane-view", data_plane.run, required=False))

    def is_ready(self) -> bool:
        return super().is_ready() and self.data_plane.ready

    def not_ready_reason(self) -> str:
        if super().is_ready():
            return "data plane: " + self.data_plane.detail
        return super().not_ready_reason()

    def readiness(self) -> dict[str, Any]:
        """Draining when this process is or a worker reports so (a stop reaches the workers
        first: the control plane stops after them)."""
        out = super().readiness()
        out["draining"] = self.draining or self.data_plane.draining
        return out

    def readiness_detail(self) -> dict[str, Any]:
        """The data-plane workers' state (this process routes nothing: no breakers)."""
        return {
            "workers": [
                {"pid": w.pid, "ready": w.ready, "detail": w.detail, "in_flight": w.in_flight}
                for w in self.data_plane.workers
            ],
        }

    @property
    def in_flight(self) -> int:
        return self.data_plane.in_flight

    def sample_metrics(self) -> None:
        """Nothing to sample: the workers write their own values, a scrape here sums them."""


async def run_control(
    gateway: Gateway, sock: socket.socket,
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:  # fmt: skip
    """Serve the admin port until SIGTERM/SIGINT (SIGHUP: reload the config)."""
    port = sock.getsockname()[1]
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def stop(name: str) -> None:
                """After the data plane: a signal sent to the whole group (not systemd's
                way, which ``serve`` orders) still leaves the admin port serving ``/readyz``
                503 and ``/metrics`` while the workers drain."""
                gateway.start_drain()  # /readyz: 503, draining, from now to the end
                view = getattr(gateway, "data_plane", None)
                if view is not None and view.workers:
                    log.info("%s: the control plane stops once the workers are gone", name)
                    with trio.move_on_after(
                        gateway.settings.server.shutdown_grace_s + DRAIN_MARGIN_S
                    ):
                        while view.workers:
                            await view.changed.wait()
                log.info("%s: stopping the control plane", name)
                shutdown.set()

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await serve_admin(AdminApp(gateway, lifespan=True), sock, shutdown,
                                  task_status=task_status)  # fmt: skip
                nursery.cancel_scope.cancel()

            nursery.start_soon(obey, signals, nursery, gateway, stop)
            await nursery.start(serve)
            log.info("control plane ready: admin port %d", port)
            tell_supervisor()  # serve's banner waits for it
            task_status.started()
    log.info("control plane stopped")


def main(argv: list[str] | None = None) -> int:
    """The control-plane process of ``trioproxy serve``."""
    from trioproxy.server.factory import from_env

    p = argparse.ArgumentParser(prog="trioproxy-control")
    p.add_argument("--admin-port", type=int, required=True)
    args = p.parse_args(argv)
    log_uncaught()  # a crash at start-up: one critical line with its traceback
    gateway = from_env(role="control")
    try:
        sock = open_tcp_socket(gateway.settings.server.admin_host, args.admin_port,
                               reuse_port=True)  # fmt: skip
    except PortBusy as exc:
        print(f"trioproxy control plane: {exc.strerror}", file=sys.stderr)
        return 2
    trio.run(partial(run_control, gateway, sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ControlGateway", "main", "run_control"]
