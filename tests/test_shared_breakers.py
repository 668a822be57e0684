"""Breakers shared across processes (simulated by separate instances over one store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trioproxy.breakers.local import LocalBreakers
from trioproxy.breakers.shared import (
    BreakerKV,
    RedisBreakerKV,
    SharedBreakers,
    SqliteBreakerKV,
)
from trioproxy.breakers.transitions import Verdict
from trioproxy.config.model import BreakerConfig
from trioproxy.store.redis_client import RedisClient

CFG = BreakerConfig(failure_threshold=4, cooldown_s=30)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "redis"])
async def kvs(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery
) -> list[BreakerKV]:
    if request.param == "sqlite":
        return [SqliteBreakerKV(str(tmp_path / "b.sqlite3")) for _ in range(2)]
    out: list[BreakerKV] = []
    for _ in range(2):  # two clients, as two processes would have
        client = RedisClient(request.getfixturevalue("redis_url"))
        await nursery.start(client.run)
        out.append(RedisBreakerKV(client))
    return out


async def test_failures_from_two_processes_add_up_and_one_probe(kvs: list[BreakerKV]) -> None:
    clock = Clock()
    a, b = (SharedBreakers(kv, CFG, sync_s=0.0, clock=clock) for kv in kvs)
    for br in (a, b, a):
        await br.report("t", 0, ok=False)
    assert await b.check("t", 0) is Verdict.ALLOW  # 3 failures < 4
    await b.report("t", 0, ok=False)
    assert await a.check("t", 0) is Verdict.DENY  # opened by the 4th, seen by the other process
    clock.t += 30
    verdicts = [await br.check("t", 0) for br in (a, b, a, b)]
    assert verdicts.count(Verdict.PROBE) == 1  # exactly one probe across processes
    await b.report("t", 0, ok=True)
    assert await a.check("t", 0) is Verdict.ALLOW


async def test_retry_after_is_shared(kvs: list[BreakerKV]) -> None:
    clock = Clock()
    a, b = (SharedBreakers(kv, CFG, sync_s=0.0, clock=clock) for kv in kvs)
    await a.report("t", 0, ok=False, retry_after=5)
    assert await b.check("t", 0) is Verdict.DENY
    clock.t += 5
    assert await b.check("t", 0) is Verdict.PROBE


async def test_concurrent_probes_one_winner(kvs: list[BreakerKV]) -> None:
    clock = Clock()
    brs = [SharedBreakers(kvs[i % 2], CFG, sync_s=0.0, clock=clock) for i in range(20)]
    await brs[0].report("t", 0, ok=False, retry_after=1)
    clock.t += 1
    verdicts: list[Verdict] = []

    async def check(br: SharedBreakers) -> None:
        verdicts.append(await br.check("t", 0))

    async with trio.open_nursery() as n:
        for br in brs:
            n.start_soon(check, br)
    assert verdicts.count(Verdict.PROBE) == 1 and verdicts.count(Verdict.DENY) == 19


async def test_a_success_needs_no_store_call_only_when_closed_and_fresh(tmp_path: Path) -> None:
    kv = SqliteBreakerKV(str(tmp_path / "b.sqlite3"))
    br = SharedBreakers(kv, CFG, sync_s=10.0, clock=Clock())
    assert not br.report_success_nowait("t")  # never read: report() must read the store
    assert await br.check("t", 0) is Verdict.ALLOW
    assert br.report_success_nowait("t")  # closed, read just now: nothing would change
    await br.report("t", 0, ok=False)
    assert not br.report_success_nowait("t")  # a failure to clear: report() writes
    await br.report("t", 0, ok=True)
    assert br.report_success_nowait("t")


async def test_local_breakers_take_a_success_at_once() -> None:
    local = LocalBreakers(CFG)
    await local.report("t", 0, ok=False)
    assert local.snapshot(0)["t"]["failures"] == 1
    assert local.report_success_nowait("t")
    assert local.snapshot(0)["t"]["failures"] == 0
