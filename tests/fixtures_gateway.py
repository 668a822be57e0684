"""Fixtures that run the provider simulator and the gateway over real sockets.

Both run in the test's own Trio nursery: the simulator on its own port, the
gateway under hypercorn's trio worker on another, so every byte crosses a
real TCP connection exactly as in production.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from trioproxy.config import demo_settings
from trioproxy.config.model import Settings
from trioproxy.edge.app import Gateway
from trioproxy.ledger.sinks import ListSink
from trioproxy.server.factory import build_gateway
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
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 2
    config.backlog = 4096
    binds: list[str] = await nursery.start(partial(serve, app, config))
    return Running(url=binds[0], key=DEMO_KEY, app=app, sink=sink, settings=settings)


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
