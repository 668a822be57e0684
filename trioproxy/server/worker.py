"""One serving process: the data plane (``httpd``) and the control plane (hypercorn).

``serve_gateway`` runs a built :class:`Gateway` on sockets bound beforehand: the
data-plane port through :class:`~trioproxy.httpd.HttpServer` (optionally TLS), the
admin port through hypercorn with :class:`~trioproxy.server.admin.AdminApp`. The
sockets start listening only once the gateway has started, so with ``SO_REUSEPORT``
the kernel never hands a connection to a worker that cannot serve it yet.

``run_worker`` adds the signals: SIGTERM or SIGINT starts the drain (see
``httpd/server.py``: the admin port's ``/readyz`` turns 503, the data port stops
accepting and closes its idle connections, ``shutdown_grace_s`` for in-flight
requests, then the gateway interrupts what is left, then the ledger and cache flush;
the admin port serves until the data plane has drained) and the process exits 0;
SIGHUP calls ``gateway.reload()`` when the gateway has one.

``python -m trioproxy.server.worker --host H --port P --no-admin`` is how ``serve`` starts
each data-plane worker (the config comes from the environment, see ``factory.py``); the
admin port is the control-plane process's (``control.py``). Tests serve both planes in one
process through ``serve_gateway`` with an admin socket.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import trio

from trioproxy.config.model import ServerConfig
from trioproxy.edge.app import Gateway
from trioproxy.httpd import HttpLimits, HttpServer, PortBusy, bind_listeners
from trioproxy.httpd.listen import tls_context
from trioproxy.server.admin import AdminApp
from trioproxy.server.early_signals import reload_held
from trioproxy.server.ready_pipe import tell_supervisor
from trioproxy.server.sockets import Bound, bind
from trioproxy.telemetry.logs import log_uncaught

log = logging.getLogger("trioproxy")

ADMIN_GRACE_S = 2.0
"""The admin port's drain (dashboard requests are short)."""


def http_limits(server: ServerConfig) -> HttpLimits:
    return HttpLimits(
        header_timeout_s=server.header_timeout_s,
        keep_alive_s=server.keep_alive_s,
        send_timeout_s=server.send_timeout_s,
        body_timeout_s=server.body_timeout_s,
        body_grace_s=server.body_grace_s,
        body_min_rate=server.body_min_rate,
        max_head_bytes=server.max_head_bytes,
        max_body_bytes=server.max_body_bytes,
    )


async def serve_gateway(
    gateway: Gateway,
    bound: Bound,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set and the drain is over (the lifespan included)."""
    server = gateway.settings.server
    tls = None
    if server.tls_cert_file and server.tls_key_file:
        tls = tls_context(server.tls_cert_file, server.tls_key_file)
    httpd = HttpServer(gateway, http_limits(server), refuse=gateway.refusals.server_refusal)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                httpd.serve,
                lambda: bind_listeners(bound.data, tls),
                shutdown=shutdown,
                grace_s=server.shutdown_grace_s,
                on_drain=gateway.start_drain,
                on_deadline=gateway.interrupt,
            )
        )
        if bound.admin is not None:  # it serves through the drain (/readyz 503, /metrics)
            await nursery.start(serve_admin, AdminApp(gateway), bound.admin, httpd.drained)
        task_status.started(httpd)


async def serve_admin(
    app: AdminApp,
    sock: socket.socket,
    until: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The control plane under hypercorn until ``until`` is set (then ``ADMIN_GRACE_S``)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and listens on) it now
    config.accesslog = None
    # hypercorn logs through our handlers (telemetry/logs.py); a name alone would make it add
    # a stderr handler of its own and print every line twice
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = ADMIN_GRACE_S
    config.keep_alive_timeout = 20
    await serve(app, config, shutdown_trigger=until.wait, task_status=task_status)  # type: ignore[arg-type]


async def reload(gateway: Gateway) -> None:
    """SIGHUP. The hook: ``Gateway.reload()`` re-reads and applies the config."""
    hook: Callable[[], Awaitable[Any]] | None = getattr(gateway, "reload", None)
    if hook is None:
        log.warning("SIGHUP: this gateway has no reload(); the config was not re-read")
        return
    log.info("SIGHUP: reloading the config")
    await hook()


GC_YOUNG_THRESHOLD = 20_000
"""Allocations (net) between two young-generation collections (CPython's default: 700).
Requests allocate and free thousands of short-lived objects; reference counting frees
them, so the cycle collector only needs to run now and then."""


async def obey(
    signals: AsyncIterator[int], nursery: trio.Nursery, gateway: Gateway,
    stop: Callable[[str], Awaitable[None]],
) -> None:  # fmt: skip
    """A serving process's signals: SIGHUP reloads ``gateway``'s config (each in its own
    task); the first SIGTERM/SIGINT starts ``stop`` with the signal's name, later ones are
    ignored."""
    stopping = False
    if reload_held():  # one came while the process was starting: the config may be newer
        nursery.start_soon(reload, gateway)
    async for signum in signals:
        if signum == signal.SIGHUP:
            nursery.start_soon(reload, gateway)
        elif not stopping:
            stopping = True
            nursery.start_soon(stop, signal.Signals(signum).name)


def settle_heap() -> None:
    """Once the app has started: its long-lived objects (modules, config, caches) go to
    the permanent generation (``gc.freeze``), so a full collection no longer walks them,
    and young collections run less often (:data:`GC_YOUNG_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def run_worker(
    build: Callable[[], Gateway],
    bound: Bound,
    *,
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Build the gateway, serve it, and obey SIGTERM/SIGINT (drain) and SIGHUP (reload)."""
    gateway = build()
    shutdown = trio.Event()
    ports = (bound.port, bound.admin_port)  # (the admin socket is handed to hypercorn)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def stop(name: str) -> None:
                log.info("%s: draining (grace %.1f s)", name,
                         gateway.settings.server.shutdown_grace_s)  # fmt: skip
                shutdown.set()

            async def serve(*, task_status: trio.TaskStatus[HttpServer]) -> None:
                await serve_gateway(gateway, bound, shutdown=shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained and flushed: stop obeying signals

            nursery.start_soon(obey, signals, nursery, gateway, stop)
            httpd = await nursery.start(serve)
            settle_heap()
            if ports[1] is None:  # the admin port is the control-plane process's
                log.info("worker ready: data port %d", ports[0])
            else:
                log.info("worker ready: data port %d, admin port %d", *ports)
            tell_supervisor()  # serve's banner waits for it
            task_status.started(httpd)
    log.info("drain complete; exiting")


def main(argv: list[str] | None = None) -> int:
    """A worker process of ``trioproxy serve --workers N``."""
    from trioproxy.server.factory import from_env

    p = argparse.ArgumentParser(prog="trioproxy-worker")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--admin-port", type=int, default=None)
    p.add_argument("--no-admin", action="store_true")
    args = p.parse_args(argv)
    log_uncaught()  # a crash at start-up: one critical line with its traceback
    gateway = from_env(
        "worker" if args.no_admin else "all"
    )  # logging as the master's, then the config
    try:
        bound = bind(gateway.settings.server, args.host, args.port, admin=not args.no_admin,
                     admin_port=args.admin_port)  # fmt: skip
    except PortBusy as exc:
        print(f"trioproxy worker: {exc.strerror}", file=sys.stderr)
        return 2
    trio.run(partial(run_worker, lambda: gateway, bound))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "http_limits", "main", "obey", "run_worker", "serve_admin", "serve_gateway", "settle_heap",
]  # fmt: skip
