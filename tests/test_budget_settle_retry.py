"""Settles the store did not take are sent again until they land (budget/settle_retry.py).

On trio's mock clock (``autojump_clock``): the retry service's backoff and the outage
policy's down mark run in virtual time, so nothing here depends on the machine's speed."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import trio

from trioproxy.budget.gate import BudgetGate, OutagePolicy, Ticket
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.settle_retry import PendingSettle, SettleRetries
from trioproxy.budget.store import StoreUnavailable
from trioproxy.config.model import BudgetsConfig, TeamBudget

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=BERLIN).timestamp()
DAY = "team:t:day:2026-11-21"
LEASE_S = 900.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlakySettleStore(MemoryStore):
    """A network store whose next ``failures`` settles are lost with their connection."""

    timeouts_are_outages = True

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.settles = 0
        """Settle calls that reached the store (not skipped as "marked down")."""

    async def settle(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        self.settles += 1
        await trio.lowlevel.checkpoint()
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("connection lost")
        return await super().settle(*args, **kw)  # type: ignore[arg-type]


def gate_over(store: MemoryStore, settles: SettleRetries, clock: Clock) -> BudgetGate:
    budgets = BudgetsConfig(teams={"t": TeamBudget("t", daily_usd=10.0)}, timezone="Europe/Berlin")
    outage = OutagePolicy(call_timeout_s=0.5, probe_after_s=1.0)
    return BudgetGate(budgets, store, clock=clock, outage=outage, lease_s=LEASE_S,
                      settles=settles)  # fmt: skip


async def admit(gate: BudgetGate, rid: str, usd: int) -> Ticket:
    return await gate.admit(request_id=rid, team="t", user="u", end_user=None,
                            worst_case_usd_micros=usd, worst_case_tokens=1)  # fmt: skip


async def until_empty(settles: SettleRetries) -> None:
    with trio.fail_after(60):  # virtual seconds
        while settles.queued:
            await settles.changed.wait()


async def test_settles_the_store_did_not_take_land_once_it_answers(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """The first settle's connection is lost (the store is marked down), so the second is
    not even sent ("marked down"); the store then fails two more attempts. Both settles
    land all the same: the team's spend is what the two requests cost, not what they
    reserved."""
    store, settles, clock = FlakySettleStore(failures=3), SettleRetries(), Clock()
    gate = gate_over(store, settles, clock)
    await nursery.start(settles.run)
    a, b = await admit(gate, "a", 1_000_000), await admit(gate, "b", 2_000_000)
    assert await store.usage(DAY, now=T0) == 3_000_000
    await gate.settle(a, cost_micros=10_000, tokens=1)
    sent = store.settles
    await gate.settle(b, cost_micros=20_000, tokens=1)
    assert store.settles == sent  # marked down: not sent, queued
    assert settles.queued == 2
    await until_empty(settles)
    assert await store.usage(DAY, now=T0) == 30_000
    assert (settles.landed, settles.dropped, settles.expired) == (2, 0, 0)
    assert store.failures == 0


async def test_a_settle_that_cannot_land_within_its_lease_is_given_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Bounded in time: once the reservation's lease has surely ended the store holds the
    reserved amount for good (``budget/store.py``), so the retry stops."""
    store, settles, clock = FlakySettleStore(failures=10**9), SettleRetries(), Clock()
    gate = gate_over(store, settles, clock)
    await nursery.start(settles.run)
    await gate.settle(await admit(gate, "a", 1_000_000), cost_micros=10_000, tokens=1)
    with trio.fail_after(60):
        while store.settles < 3:  # the retry service is trying
            await trio.sleep(1)
    clock.now = T0 + LEASE_S + 1
    await until_empty(settles)
    assert (settles.landed, settles.expired) == (0, 1)
    assert await store.usage(DAY, now=T0) == 1_000_000


async def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    settles = SettleRetries(max_pending=2)
    abandoned: list[str] = []

    async def send() -> None:
        raise StoreUnavailable("down")

    for rid in ("a", "b", "c"):
        settles.add(PendingSettle(rid, T0, Clock(), send, lambda _why, r=rid: abandoned.append(r)))
    assert (settles.queued, settles.dropped, abandoned) == (2, 1, ["a"])


async def test_shutdown_flush_lands_what_it_can_and_gives_up_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No service running: the gateway's shutdown flush alone sends them, bounded."""
    store, settles, clock = FlakySettleStore(failures=1), SettleRetries(), Clock()
    gate = gate_over(store, settles, clock)
    a, b = await admit(gate, "a", 1_000_000), await admit(gate, "b", 1_000_000)
    await gate.settle(a, cost_micros=10_000, tokens=1)
    assert settles.queued == 1
    await settles.flush(timeout_s=5)
    assert settles.queued == 0 and settles.landed == 1
    assert await store.usage(DAY, now=T0) == 1_010_000

    store.failures = 10**9
    await gate.settle(b, cost_micros=10_000, tokens=1)
    start = trio.current_time()
    await settles.flush(timeout_s=5)
    assert trio.current_time() - start == pytest.approx(5)
    assert settles.queued == 0 and settles.dropped == 1


class BusyOnceStore(MemoryStore):
    """Like the embedded SQLite store busy for a while: its first settle does not answer in
    time (a timeout there fails the call at hand, it marks nothing down)."""

    timeouts_are_outages = False

    def __init__(self) -> None:
        super().__init__()
        self.busy = True

    async def settle(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        if self.busy:
            self.busy = False
            await trio.sleep_forever()
        return await super().settle(*args, **kw)  # type: ignore[arg-type]


async def test_a_settle_that_timed_out_on_a_busy_embedded_store_lands_later(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store, settles, clock = BusyOnceStore(), SettleRetries(), Clock()
    gate = gate_over(store, settles, clock)
    await nursery.start(settles.run)
    ticket = await admit(gate, "a", 1_000_000)
    start = trio.current_time()
    await gate.settle(ticket, cost_micros=10_000, tokens=1)
    assert trio.current_time() - start == pytest.approx(2.5)  # its patient timeout
    assert settles.queued == 1
    await until_empty(settles)
    assert settles.landed == 1
    assert await store.usage(DAY, now=T0) == 10_000
