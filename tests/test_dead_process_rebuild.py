"""A dead process's requests when Redis lost its state and another instance rebuilt it
before the dead process's journal was recovered: the rebuilt state holds neither their
reservations (flushed) nor their spend (the ledger had no records of them yet). Once the
journal is recovered (its records reach the ledger, and the dead-reservations service), each
is counted in the store once, at its record: the store's spend equals the ledger's again. A
request the rebuild counted from the ledger is not charged again, nor is a recovery that
comes twice."""

from __future__ import annotations

from typing import Any

import trio

from tests.test_budget_recovery import T0, Ledger, detect, instance, lose_state
from trioproxy.budget.buckets import team_period, user_window
from trioproxy.budget.periods import period_at
from trioproxy.budget.redis_store import RETENTION_S
from trioproxy.budget.store import StateLost
from trioproxy.config.model import BudgetsConfig, TeamBudget, UserWindow
from trioproxy.ledger.record import UsageRecord
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.dead_reservations import DeadReservations

CFG = BudgetsConfig(
    teams={"t": TeamBudget("t", daily_usd=10.0)},
    users={"u": UserWindow("u", 1_000_000, 86_400)},
    timezone="Europe/Berlin",
)


def record(rid: str, kind: str, cost: int, tokens: int, ts: float, attempt: int = 0) -> UsageRecord:
    return UsageRecord(
        ts=ts, request_id=rid, kind=kind, key_name="k", team="t", user="u", feature="",
        route="r", endpoint="chat", end_user=None, chain="default",
        target="m" if kind == "attempt" else None, input_tokens=tokens, output_tokens=0,
        estimated=True, cost_micros=cost, status=0, error_kind="interrupted",
        attempt=attempt, outcome="interrupted", stream=True,
    )  # fmt: skip


async def drained(dead: DeadReservations) -> None:
    """Until the service has gone through everything handed over (an item leaves the queue
    once its store calls have returned)."""
    with trio.fail_after(30):
        while dead._pending:
            await trio.sleep(0.01)


async def test_a_dead_process_journal_recovered_after_a_rebuild_is_counted_once(
    nursery: trio.Nursery, redis_url: str
) -> None:
    ledger = Ledger()
    ledger.add("old", T0 - 3 * 3600, 1_000_000, 700)  # from the hourly roll-up
    async with trio.open_nursery() as dying:  # instance A's worker
        a = await instance(dying, redis_url, ledger, cfg=CFG)
        b = await instance(nursery, redis_url, ledger, cfg=CFG)  # instance B: sees A's epoch
        for rid in ("s0", "s1", "s2", "s3", "s4"):
            await a.admit(rid, usd=400_000, tokens=5_000)
        # s0's records reached the ledger before the loss (its settle did not come)
        ledger.add("s0", T0 - 40, 33_000, 1_100)
        dying.cancel_scope.cancel()  # SIGKILL: A's tickets and replay journal are gone
    await lose_state(b)
    await detect(b)
    await b.rec.wait_restored()  # B rebuilt from the ledger (old + s0) and its own journal
    day = team_period("t", "day", period_at("day", T0, a.gate._tz).name)
    month = team_period("t", "month", period_at("month", T0, a.gate._tz).name)
    window = user_window("u")
    assert await b.store.usage(day, now=T0) == 1_033_000
    # A's restarted worker recovers the dead worker's journal: to the ledger, and handed on
    spent = {"s0": (33_000, 1_100), "s1": (41_000, 900), "s2": (45_500, 1_300),
             "s3": (47_000, 1_700), "s4": (48_500, 2_000)}  # fmt: skip
    records: list[UsageRecord] = []
    for i, (rid, (cost, tokens)) in enumerate(spent.items()):
        ts = T0 - 40 + i
        records += [record(rid, "attempt", cost, tokens, ts, attempt=1),
                    record(rid, "request", cost, tokens, ts)]  # fmt: skip
        if rid != "s0":
            ledger.add(rid, ts, cost, tokens)
    dead = DeadReservations(lambda: Admission(b.gate))
    await nursery.start(dead.run)
    dead.hand(records)
    await drained(dead)
    assert (dead.settled, dead.dropped) == (4, 0)  # s0: counted by the rebuild, not again

    async def store_equals_ledger() -> None:
        cost = sum(r.cost_micros for r in ledger.records)
        tokens = sum(r.tokens for r in ledger.records)
        assert cost == 1_000_000 + sum(c for c, _ in spent.values())
        assert await b.store.usage(day, now=T0) == cost
        assert await b.store.usage(month, now=T0) == cost
        assert await b.store.usage(window, now=T0) == tokens

    await store_equals_ledger()
    # the same journal recovered again (a replay; another worker's service): nothing more
    dead.hand(records)
    await drained(dead)
    again = DeadReservations(lambda: Admission(b.gate))
    await nursery.start(again.run)
    again.hand(records)
    await drained(again)
    assert (dead.settled, again.settled) == (4, 0)
    await store_equals_ledger()
    # a request older than the store keeps a reservation's record: not charged
    claims = b.gate.spent_claims("t", "u", 5, 5, at=T0 - RETENTION_S)
    assert not await b.store.charge_unheld("ancient", claims, at=T0 - RETENTION_S, now=T0)
    await store_equals_ledger()


async def test_a_charge_met_by_a_lost_state_is_made_once_it_is_rebuilt(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """Handed over while the state is lost (no epoch yet): not dropped, tried again, and
    charged once the state is back (the rebuild read the ledger before the records reached
    it)."""
    ledger = Ledger()
    async with trio.open_nursery() as dying:
        a = await instance(dying, redis_url, ledger, cfg=CFG)
        b = await instance(nursery, redis_url, ledger, cfg=CFG)
        await a.admit("s1", usd=400_000, tokens=5_000)
        dying.cancel_scope.cancel()
    await lose_state(b)
    outcomes: list[str] = []
    charge = b.store.charge_unheld

    async def watched(*args: Any, **kw: Any) -> bool:
        try:
            done = await charge(*args, **kw)
        except StateLost:
            outcomes.append("lost")
            raise
        outcomes.append(str(done))
        return done

    b.store.charge_unheld = watched  # type: ignore[method-assign]
    dead = DeadReservations(lambda: Admission(b.gate))
    await nursery.start(dead.run)
    dead.hand([record("s1", "request", 41_000, 900, T0 - 5)])
    with trio.fail_after(30):
        while not outcomes:
            await trio.sleep(0.01)
    assert outcomes == ["lost"] and dead._pending
    await detect(b)
    await b.rec.wait_restored()  # the ledger had no record of s1 yet
    ledger.add("s1", T0 - 5, 41_000, 900)
    with trio.fail_after(30):  # tried again after its backoff
        while dead._pending:
            await trio.sleep(0.01)
    assert outcomes == ["lost", "True"] and (dead.settled, dead.dropped) == (1, 0)
    day = team_period("t", "day", period_at("day", T0, a.gate._tz).name)
    assert await b.store.usage(day, now=T0) == 41_000
