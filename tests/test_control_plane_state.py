"""The state the control-plane process shares with the data-plane workers: the workers'
state files (``server/readiness.py``) and the cache commands (``server/cache_commands.py``
over the admin store's ``cache_commands`` table). Real files and a real SQLite admin store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from trioproxy.admin.store import AdminStore
from trioproxy.config import demo_settings
from trioproxy.config.model import RouteConfig
from trioproxy.edge.app import Gateway
from trioproxy.server import cache_commands
from trioproxy.server.cache_commands import RelayedCache, applier
from trioproxy.server.control import ControlGateway
from trioproxy.server.factory import build_gateway, settings_cache
from trioproxy.server.readiness import DataPlaneView, ReadyDir, WorkerState, reporter
from trioproxy.store.resp import RedisUnavailable


def test_ready_dir_round_trip_ignores_half_written_files(tmp_path: Path) -> None:
    d = ReadyDir(tmp_path)
    assert d.read() == []  # no directory yet: no worker
    d.write(WorkerState(11, True, "", 3))
    d.write(WorkerState(12, False, "draining", 0))
    (d.path / ".13.tmp").write_bytes(b'{"ready": tr')  # a write in progress
    assert d.read() == [WorkerState(11, True, "", 3), WorkerState(12, False, "draining", 0)]
    d.remove(12)
    d.remove(12)  # twice: the supervisor after a clean stop
    assert d.read() == [WorkerState(11, True, "", 3)]


def test_the_data_plane_is_ready_only_if_every_reporting_worker_is(tmp_path: Path) -> None:
    view = DataPlaneView(ReadyDir(tmp_path))
    assert not view.ready and view.detail == "no data-plane worker is running"
    view.workers = [WorkerState(1, True, "", 2), WorkerState(2, False, "down: ledger", 1)]
    assert not view.ready and view.detail == "worker 2: down: ledger"
    assert view.in_flight == 3
    view.workers = [WorkerState(1, True, "", 0)]
    assert view.ready and view.in_flight == 0


async def test_a_worker_reports_while_it_runs_and_its_file_goes_when_it_stops(
    tmp_path: Path,
) -> None:
    ready_dir = ReadyDir(tmp_path)
    view = DataPlaneView(ready_dir)
    state = [(False, "starting or draining")]
    async with trio.open_nursery() as nursery:
        await nursery.start(view.run)
        worker = trio.CancelScope()
        nursery.start_soon(_run_reporter, ready_dir, state, worker)
        with trio.fail_after(10):
            while [w.detail for w in view.workers] != ["starting or draining"]:
                await view.changed.wait()
            state[0] = (True, "")
            while not view.ready:
                await view.changed.wait()
        assert [w.pid for w in view.workers] == [os.getpid()]
        worker.cancel()
        with trio.fail_after(10):  # a clean stop removes the file
            while view.workers:
                await view.changed.wait()
        nursery.cancel_scope.cancel()


async def _run_reporter(
    ready_dir: ReadyDir, state: list[tuple[bool, str]], scope: trio.CancelScope
) -> None:
    with scope:
        await reporter(ready_dir, lambda: state[0], lambda: 0)()


class RecordingCache:
    """The two methods the applier calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.changed = trio.Event()

    async def flush(self, team: str, route: RouteConfig) -> tuple[str, int, int | None]:
        self.calls.append(("flush", team, route.name))
        self._changed()
        return f"team:{team}", 1, None

    async def delete(self, entry_ref: str) -> bool:
        self.calls.append(("delete", entry_ref))
        self._changed()
        return True

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


async def test_every_worker_applies_the_commands_posted_after_it_started(
    tmp_path: Path,
) -> None:
    settings = demo_settings("http://127.0.0.1:1", "k", state_dir=str(tmp_path))
    store = AdminStore.open_sync(str(tmp_path), None)
    relayed = RelayedCache(store, clock=lambda: 1000.0)
    await relayed.flush("old", settings.routes["chat"])  # before the workers: not theirs
    workers = [RecordingCache(), RecordingCache()]
    async with trio.open_nursery() as nursery:
        for cache in workers:
            await nursery.start(applier(cache, store, lambda: settings))  # type: ignore[arg-type]
        assert await relayed.flush("t1", settings.routes["chat"]) == ("team:t1", 0, None)
        await store.post_cache_command(1001.0, "flush", team="t1", route="no-such-route")
        assert await relayed.delete("xabc:123") is True
        with trio.fail_after(10):
            for cache in workers:
                while len(cache.calls) < 2:
                    await cache.changed.wait()
        nursery.cancel_scope.cancel()
    for cache in workers:  # the old command skipped, the unknown route ignored
        assert cache.calls == [("flush", "t1", "chat"), ("delete", "xabc:123")]


class FlakyCache(RecordingCache):
    """A worker's cache over a store that can be down (Redis: RedisUnavailable), and a
    command it cannot apply at all (a bug)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.tried = 0

    async def delete(self, entry_ref: str) -> bool:
        self.tried += 1
        self._changed()
        if entry_ref == "poison":
            raise ValueError("a bug")
        if self.down:
            raise RedisUnavailable("not connected")
        return await super().delete(entry_ref)


async def test_a_command_the_cache_store_cannot_take_yet_is_applied_once_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier moved past a command before applying it, and a store error killed it: its
    restart began at the newest command, so that one and those posted meanwhile were never
    applied on that worker (a dashboard "delete" answered "sent" and was lost)."""
    monkeypatch.setattr(cache_commands, "POLL_S", 0.01)
    settings = demo_settings("http://127.0.0.1:1", "k", state_dir=str(tmp_path))
    store = AdminStore.open_sync(str(tmp_path), None)
    cache = FlakyCache()
    run = applier(cache, store, lambda: settings)  # type: ignore[arg-type]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            await store.post_cache_command(1000.0, "delete", entry="a")
            await store.post_cache_command(1001.0, "delete", entry="b")
            while cache.tried < 3:  # "a" tried again and again, "b" waits behind it
                await cache.changed.wait()
            nursery.cancel_scope.cancel()  # the service stops (a crash, a restart)
        assert cache.calls == []
        cache.down = False
        async with trio.open_nursery() as nursery:
            await nursery.start(run)  # the supervisor's restart: the same service
            await store.post_cache_command(1002.0, "delete", entry="poison")
            await store.post_cache_command(1003.0, "delete", entry="c")
            while len(cache.calls) < 3:
                await cache.changed.wait()
            nursery.cancel_scope.cancel()
    assert cache.calls == [("delete", "a"), ("delete", "b"), ("delete", "c")]


def test_the_control_plane_builds_no_cache_of_its_own(tmp_path: Path) -> None:
    """Its cache actions go to the workers: no embedder, index or LRU is built here."""
    settings = demo_settings("http://127.0.0.1:1", "k", state_dir=str(tmp_path))
    assert settings_cache(settings)  # the demo caches answers
    gw = build_gateway(settings, role="control", run_dir=str(tmp_path))
    assert isinstance(gw, ControlGateway) and isinstance(gw.cache, RelayedCache)
    assert gw.inner is not None  # the dashboard


def test_a_dashboard_that_fails_to_mount_leaves_the_control_plane_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else the control plane would die at every start until the supervisor stops the
    service, proxy and all."""

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("templates unreadable")

    monkeypatch.setattr("trioproxy.dashboard.app.mount_dashboard", broken)
    settings = demo_settings("http://127.0.0.1:1", "k", state_dir=str(tmp_path))
    gw = build_gateway(settings, role="control", run_dir=str(tmp_path))
    assert isinstance(gw, ControlGateway) and gw.inner is None


async def test_a_worker_reports_its_drain_at_once_not_at_its_next_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain's start nudges the report: with the periodic look an hour away, the file
    still says "draining" as soon as the gateway starts draining, and the control plane's
    /readyz says so at the top level too."""
    monkeypatch.setattr("trioproxy.server.readiness.REPORT_S", 3600.0)
    ready_dir = ReadyDir(tmp_path)
    settings = demo_settings("http://127.0.0.1:1", "k", state_dir=str(tmp_path))
    gw = Gateway(settings)  # a worker's gateway: only its readiness is used
    before = gw.not_ready_reason()  # its services are not running here: "down: ..."
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            reporter(ready_dir, lambda: (False, gw.not_ready_reason()), lambda: 0, gw.drain_started)
        )
        with trio.fail_after(10):
            while [w.detail for w in await trio.to_thread.run_sync(ready_dir.read)] != [before]:
                await trio.sleep(0.01)
            gw.start_drain()
            while [w.detail for w in await trio.to_thread.run_sync(ready_dir.read)] != ["draining"]:
                await trio.sleep(0.01)
        view = DataPlaneView(ready_dir)
        view._read(ready_dir.read())
        control = ControlGateway(settings, data_plane=view)
        assert control.readiness()["draining"] is True and not control.is_ready()
        nursery.cancel_scope.cancel()
    # the drained worker is gone (its file removed at its stop), the control plane not told
    # yet: still draining, not "no worker" and draining false
    assert ready_dir.read() == []
    view._read(ready_dir.read())
    assert control.readiness()["draining"] is True and not control.is_ready()
