"""Fixtures that run the provider simulator and the gateway over real sockets.

Both run in the test's own Trio nursery: the simulator on its own port, the
gateway exactly as a worker of ``trioproxy serve`` runs it (``serve_gateway``:
the data-plane server on one port, the control plane under hypercorn on an
admin port), so every byte crosses a real TCP connection as in production.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio

from trioproxy.config import demo_settings
from trioproxy.config.model import Settings
from trioproxy.edge.app import Gateway
from trioproxy.httpd import HttpServer, open_tcp_socket
from trioproxy.ledger.sinks import ListSink
from trioproxy.server.factory import build_gateway
from trioproxy.server.sockets import Bound
from trioproxy.server.worker import serve_gateway
from trioproxy.simulator import Simulator
from trioproxy.simulator.faults import Fault

DEMO_KEY = "tp-test-key-0123456789"

__all__ = ["DEMO_KEY", "Running", "gateway", "sim", "start_gateway", "start_simulator"]


@dataclass
class RunningSim:
    sim: Simulator
    url: str


@dataclass
class Running:
    url: str
    """Gateway base URL, e.g. http://127.0.0.1:PORT (no /v1)."""
    key: str
    app: Gateway
    sink: ListSink
    settings: Settings
    sims: list[RunningSim] = field(default_factory=list)
    admin_url: str = ""
    """The control plane (dashboard, admin API, /metrics)."""
    httpd: HttpServer | None = None
    shutdown: trio.Event = field(default_factory=trio.Event)
    """Set it to drain the gateway as SIGTERM does."""

    @property
    def sim(self) -> Simulator:
        return self.sims[0].sim


async def start_simulator(
    nursery: trio.Nursery, fault: Fault | None = None, **kwargs: Any
) -> RunningSim:
    sim = Simulator(default_fault=fault, **kwargs)
    port = await nursery.start(sim.serve, "127.0.0.1", 0)
    return RunningSim(sim, f"http://127.0.0.1:{port}")


async def start_gateway(
    nursery: trio.Nursery, settings: Settings, *, sink: ListSink | None = None, **kwargs: Any
) -> Running:
    sink = sink or ListSink()
    app = build_gateway(settings, sink=sink, **kwargs)
    bound = Bound(
        open_tcp_socket("127.0.0.1", 0, reuse_port=False),
        open_tcp_socket("127.0.0.1", 0, reuse_port=False),
    )
    url, admin_url = f"http://127.0.0.1:{bound.port}", f"http://127.0.0.1:{bound.admin_port}"
    shutdown = trio.Event()
    httpd = await nursery.start(partial(serve_gateway, app, bound, shutdown=shutdown))
    return Running(url=url, key=DEMO_KEY, app=app, sink=sink, settings=settings,
                   admin_url=admin_url, httpd=httpd, shutdown=shutdown)  # fmt: skip


@pytest.fixture
async def sim(nursery: trio.Nursery) -> RunningSim:
    return await start_simulator(nursery)


@pytest.fixture
async def gateway(nursery: trio.Nursery, sim: RunningSim) -> AsyncIterator[Running]:
    """The demo config over one simulator (both wire formats)."""
    running = await start_gateway(
        nursery, demo_settings(sim.url, DEMO_KEY, state_dir=tempfile.mkdtemp(prefix="tp-"))
    )
    running.sims.append(sim)
    yield running


SettingsFactory = Callable[[list[str]], Settings]
