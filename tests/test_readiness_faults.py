"""/readyz turns traffic away while the process cannot serve it whole: a budget store down
under fail_closed, records being lost (a full state disk). A review filled the state disk:
/readyz said ready on both ports while every budgeted request got a 503, or every record was
lost, and a load balancer kept sending."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import capped_settings
from trioproxy.config.model import StorageConfig
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.service import LOSING_S, LedgerService


async def test_a_budget_store_refusing_everything_makes_readyz_503(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, capped_settings(sim.url, str(tmp_path)))
    assert g.app.admission is not None
    calls = g.app.admission.gate._calls
    async with httpx.AsyncClient(timeout=30) as c:
        assert (await c.get(g.url + "/readyz")).status_code == 200
        calls._mark_down("a test: the store's disk is full")
        for url in (g.url, g.admin_url):
            r = await c.get(url + "/readyz")
            assert r.status_code == 503 and "budget store down" in r.json()["faults"][0]
        calls._down_until = trio.current_time()  # a probe is due: traffic may carry it
        assert (await c.get(g.url + "/readyz")).status_code == 200


def test_records_lost_in_the_last_seconds_make_the_ledger_faulty(tmp_path: Path) -> None:
    ledger = LedgerService(StorageConfig(state_dir=str(tmp_path)))
    assert not ledger.losing_records()
    ledger._journal = Journal(tmp_path)
    ledger._journal.failed_at = time.monotonic()  # an append failed just now
    assert ledger.losing_records()
    ledger._journal.failed_at = time.monotonic() - LOSING_S - 1
    assert not ledger.losing_records()
    ledger._journal.close()


async def test_the_ledger_fault_names_what_the_state_disk_has(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault said "(is the state disk full?)" on a read-only filesystem too; it names
    what ``statvfs`` says the state disk has: read-only, or full."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, capped_settings(sim.url, str(tmp_path)))
    g.app._ledger = SimpleNamespace(losing_records=lambda: True)  # type: ignore[assignment]
    real = os.statvfs(tmp_path)

    def statvfs(flag: int, bavail: int) -> Callable[[object], object]:
        fields = {f: getattr(real, f) for f in dir(real) if f.startswith("f_")}
        return lambda _path: SimpleNamespace(**{**fields, "f_flag": flag, "f_bavail": bavail})

    for flag, bavail, what in ((os.ST_RDONLY, real.f_bavail, "read-only"), (0, 0, "full")):
        monkeypatch.setattr(os, "statvfs", statvfs(flag, bavail))
        assert g.app.faults() == [
            f"ledger: the state disk of {tmp_path} refused writes in the last {LOSING_S:g} s "
            f"({what}): records are held in memory until it takes them"
        ]
