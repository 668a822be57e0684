"""Two OS processes share one Redis: 1,000 concurrent admissions (500 each)
against a budget that fits exactly N (more than 500) admit exactly N in total."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from trioproxy.budget.gate import BudgetGate, OutagePolicy
from trioproxy.budget.redis_store import RedisStore
from trioproxy.config.model import BudgetsConfig, TeamBudget
from trioproxy.errors import PolicyError
from trioproxy.store.redis_client import RedisClient

T0 = 1_795_000_000.0
PRICE = 14_280
FITS = 700  # 700 * 14,280 = 9,996,000 <= $10 < 701 * 14,280: more than either process asks
ROOT = Path(__file__).resolve().parent.parent


async def admit_many(url: str, tag: str, count: int, go: trio.Event | None) -> int:
    cfg = BudgetsConfig(teams={"t": TeamBudget("t", daily_usd=10.0)})
    async with trio.open_nursery() as nursery:
        client = RedisClient(url, call_timeout=30.0)
        await nursery.start(client.run)
        store = RedisStore(client)
        await store.initialise()  # a fresh state (no ledger to rebuild from); one of two wins
        gate = BudgetGate(cfg, store, clock=lambda: T0,
                          outage=OutagePolicy(call_timeout_s=30.0))  # fmt: skip
        await gate.team_limits("t")
        if go is None:  # child: tell the parent we are ready, wait for "go" on stdin
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
        else:
            await go.wait()
        admitted = 0

        async def one(i: int) -> None:
            nonlocal admitted
            try:
                await gate.admit(request_id=f"{tag}{i}", team="t", user="u", end_user=None,
                                 worst_case_usd_micros=PRICE, worst_case_tokens=1)  # fmt: skip
                admitted += 1
            except PolicyError:
                pass

        async with trio.open_nursery() as inner:
            for i in range(count):
                inner.start_soon(one, i)
        nursery.cancel_scope.cancel()
    return admitted


async def test_two_processes_share_one_redis(redis_url: str) -> None:
    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, redis_url],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    child = await trio.to_thread.run_sync(spawn)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert await trio.to_thread.run_sync(child.stdout.readline) == "ready\n"
        go = trio.Event()
        result: list[int] = []

        async def mine() -> None:
            result.append(await admit_many(redis_url, "parent-", 500, go))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(mine)
            await trio.testing.wait_all_tasks_blocked()
            child.stdin.write("go\n")
            child.stdin.flush()
            go.set()
        out, _ = await trio.to_thread.run_sync(child.communicate, None, 60)
        theirs = int(out.strip())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    assert result[0] + theirs == FITS
    assert result[0] >= 200 and theirs >= 200  # each got its share of the race
    client_usage = await _usage(redis_url)
    assert client_usage == FITS * PRICE <= 10_000_000


async def _usage(url: str) -> int:
    async with trio.open_nursery() as nursery:
        client = RedisClient(url)
        await nursery.start(client.run)
        used = await RedisStore(client).usage("team:t:day:2026-11-18", now=T0)
        nursery.cancel_scope.cancel()
    return used


if __name__ == "__main__":
    print(trio.run(admit_many, sys.argv[1], "child-", 500, None), flush=True)
