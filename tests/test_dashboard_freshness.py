"""The stale-data banner: server-side checks (this worker's readiness, the ledger database,
the other workers' heartbeats), shown on every page and every panel refresh."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import cast
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing

from tests.dash_fixtures import page_ok, sign_in, start_dash
from tests.test_dashboard_handlers import access, text
from trioproxy.admin.store import Heartbeat, StoreError
from trioproxy.dashboard.freshness import (
    FORGET_AFTER_S,
    HEARTBEAT_S,
    STALE_AFTER_S,
    HeartbeatService,
    stale_reasons,
    worker_id,
)

UTC = ZoneInfo("UTC")


def test_reasons_name_what_is_stale() -> None:
    now = 1_800_000_000.0
    beats = [
        Heartbeat("me", now - 100, True, ""),  # this worker: never reported as stopped
        Heartbeat("w2", now - 1, True, ""),
        Heartbeat("w3", now - STALE_AFTER_S - 5, True, ""),
        Heartbeat("w4", now - 1, False, "down: ledger"),
    ]
    fresh = stale_reasons(now=now, me="me", ready=(True, ""), ledger_down=None, beats=beats[:2],
                          tz=UTC)  # fmt: skip
    assert fresh == []
    reasons = stale_reasons(now=now, me="me", ready=(False, "starting or draining"),
                            ledger_down="connection refused", beats=beats, tz=UTC)  # fmt: skip
    assert reasons[0] == "this gateway's data plane is not ready (starting or draining)"
    assert "ledger database is unreachable" in reasons[1] and "connection refused" in reasons[1]
    assert (
        reasons[2].startswith("gateway worker w3 stopped reporting at") and "15 s ago" in reasons[2]
    )
    assert reasons[3] == "gateway worker w4 is not ready (down: ledger)"
    assert len(reasons) == 4


async def test_pages_and_panels_show_the_banner_while_stale(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    await sign_in(c)
    for path in ("/", "/budgets", "/keys", "/spend", "/audit", "/panel/overview"):
        assert 'id="server-stale"' not in await page_ok(c, path), path
    d.gw.ready = False  # not started yet
    panel = await text(await c.get("/panel/overview"))
    assert 'id="server-stale"' in panel and "not ready (starting)" in panel
    assert "not ready" in await text(await c.get("/budgets"))
    d.gw.ready = True
    # another worker of this host crashed: its last heartbeat ages past the bound
    store = access(d).store
    now = time.time()
    await store.beat(Heartbeat("elsewhere:42", now - STALE_AFTER_S - 1, True, ""),
                     forget_before=now - 3600)  # fmt: skip
    panel = await text(await c.get("/panel/providers"))
    assert "gateway worker elsewhere:42 stopped reporting" in panel
    await store.forget_worker("elsewhere:42")
    assert 'id="server-stale"' not in await page_ok(c, "/panel/providers")


async def test_heartbeats_are_written_and_removed_on_a_clean_stop(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    store = access(d).store
    me = worker_id()
    with trio.fail_after(10):  # the gateway's own heartbeat service (started with it)
        while not any(hb.worker == me for hb in await store.heartbeats()):
            await trio.testing.wait_all_tasks_blocked()
    other = HeartbeatService(d.gw, store, clock=time.time, worker="other:1")
    async with trio.open_nursery() as inner:
        await inner.start(other.run)
        assert "other:1" in [hb.worker for hb in await store.heartbeats()]
        inner.cancel_scope.cancel()
    assert "other:1" not in [hb.worker for hb in await store.heartbeats()]


def test_long_gone_workers_are_not_news() -> None:
    now = 1_800_000_000.0
    old = [Heartbeat("gone", now - FORGET_AFTER_S - 1, True, "")]
    assert stale_reasons(now=now, me="me", ready=(True, ""), ledger_down=None, beats=old,
                         tz=UTC) == []  # fmt: skip


class RefusingStore:
    """An admin store on a full disk: every write refused until ``refusals`` run out."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.beats: list[Heartbeat] = []

    async def beat(self, hb: Heartbeat, *, forget_before: float) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise StoreError("database or disk is full")
        self.beats.append(hb)

    async def forget_worker(self, worker: str) -> None:
        raise StoreError("attempt to write a readonly database")


def test_a_store_refusing_heartbeats_is_a_warning_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full state disk crashed the dashboard-heartbeat service with an error traceback at
    every beat (12-18 per episode); it is one warning line per 10 s now, the beats go on, and
    a refused removal at the stop is a warning too."""
    from trioproxy.admin.store import AdminStore

    store = RefusingStore(refusals=4)  # 4 beats refused, 2 s apart: within one 10 s line
    gw = SimpleNamespace(is_ready=lambda: True)
    service = HeartbeatService(gw, cast(AdminStore, store), clock=time.time,  # type: ignore[arg-type]
                               worker="w:1")  # fmt: skip

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            while len(store.beats) < 2:
                await trio.sleep(HEARTBEAT_S)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="trioproxy"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "heartbeat" in r.getMessage()]
    assert lines == [
        ("WARNING", "dashboard heartbeat: the admin store refused it: database or disk is full "
                    "(0 more since the last such line)"),
        ("INFO", "dashboard heartbeat: the admin store takes it again"),
        ("WARNING", "dashboard heartbeat: could not remove this worker's: attempt to write a "
                    "readonly database"),
    ], lines  # fmt: skip
    assert not [r for r in caplog.records if r.exc_info]
