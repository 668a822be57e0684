"""Background services are supervised: a crash is logged and restarted with backoff, and
``/readyz`` is not ready while a required service is down; siblings keep running."""

from __future__ import annotations

import itertools
import logging
import tempfile

import httpx
import pytest
import trio

from tests.fixtures_gateway import DEMO_KEY, start_gateway, start_simulator
from trioproxy.config import demo_settings
from trioproxy.core.backoff import BackoffPolicy
from trioproxy.edge.services import NamedService, Supervisor


class Flaky:
    """A service that runs until the test tells it to crash; a restart waits for ``resume``
    before it reports started, so the test decides how long the service stays down."""

    def __init__(self) -> None:
        self.crash = trio.Event()
        self.resume = trio.Event()
        self.starts = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        self.crash = trio.Event()
        if self.starts > 1:
            await self.resume.wait()
        task_status.started()
        await self.crash.wait()
        raise RuntimeError("boom")


async def wait_for(client: httpx.AsyncClient, status: int) -> dict[str, object]:
    with trio.fail_after(20):
        while True:
            r = await client.get("/readyz")
            if r.status_code == status:
                return r.json()  # type: ignore[no-any-return]
            await trio.sleep(0.02)


async def test_a_crashed_required_service_is_restarted_and_readyz_follows(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await start_simulator(nursery)
    flaky, steady = Flaky(), Flaky()
    settings = demo_settings(sim.url, DEMO_KEY, state_dir=tempfile.mkdtemp(prefix="tp-"))
    g = await start_gateway(
        nursery, settings,
        services=[NamedService("flaky", flaky.run), NamedService("optional", steady.run, False)],
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=g.url, timeout=30) as c:
        ready = await wait_for(c, 200)
        services = ready["services"]
        assert isinstance(services, dict) and set(services.values()) == {"up"}
        assert {"flaky", "optional", "cache-writer", "embedder"} <= set(services)
        with caplog.at_level(logging.INFO, "trioproxy.services"):
            flaky.crash.set()
            down = await wait_for(c, 503)  # not ready while it is down (as long as it is) ...
            assert {k: v for k, v in down["services"].items() if v != "up"} == {"flaky": "down"}  # type: ignore[union-attr]
            flaky.resume.set()
            await wait_for(c, 200)  # ... and ready again once restarted
        assert flaky.starts == 2 and steady.starts == 1  # the sibling was not cancelled
        assert "service flaky crashed; restarting in" in caplog.text
        assert "RuntimeError: boom" in caplog.text and "service flaky restarted" in caplog.text
        steady.resume.set()
        steady.crash.set()  # an optional service down: still ready
        with trio.fail_after(20):
            while steady.starts < 2:
                assert (await c.get("/readyz")).status_code == 200
                await trio.sleep(0.02)


async def test_a_service_that_fails_to_start_fails_start_up() -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise OSError("cannot open")

    sup = Supervisor([NamedService("broken", broken)])
    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await sup.start_all(nursery)


async def test_restarts_back_off_and_a_restart_that_fails_to_start_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def crashing(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        if len(starts) in (2, 3):
            raise OSError("still down")  # the restart itself fails before it started
        task_status.started()
        raise RuntimeError("crash")

    sup = Supervisor([NamedService("c", crashing)], BackoffPolicy(1.0, 8.0, jitter=False))
    async with trio.open_nursery() as nursery:
        await sup.start_all(nursery)
        while len(starts) < 6:
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert sup.restarts["c"] >= 5 and not sup.ready()
