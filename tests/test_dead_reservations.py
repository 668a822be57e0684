"""A dead process's open reservations, settled off the ledger writer at its records, retried
while the store does not answer, left to their lease once it has ended."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trioproxy.budget.gate import BudgetGate
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.store import StoreUnavailable
from trioproxy.config.model import BudgetsConfig, TeamBudget
from trioproxy.ledger.record import UsageRecord
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.dead_reservations import DeadReservations

T0 = 1_795_000_000.0
DAY = "team:t:day:2026-11-18"


class Flaky(MemoryStore):
    """Not answering for its first ``down`` reads of a reservation (Redis not connected yet)."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    async def held(self, rid: str, *, now: float) -> Any:
        if self.down:
            self.down -= 1
            raise StoreUnavailable("redis: not connected")
        return await super().held(rid, now=now)


def record(rid: str, kind: str, cost: int, tokens: int, **kw: Any) -> UsageRecord:
    return UsageRecord(
        ts=T0, request_id=rid, kind=kind, key_name="k", team="t", user="u", feature=None,
        route="r", endpoint="chat", end_user=None, chain="default", target="m" if kind == "attempt" else None,
        provider=None, provider_model=None, input_tokens=tokens, output_tokens=0, estimated=True,
        cache_read_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0, reasoning_tokens=0,
        cost_micros=cost, saved_micros=0, cache_saved_micros=0, latency_ms=0.0, ttfb_ms=None,
        cache="off", status=0, error_kind="interrupted", fallback_depth=0, attempt=kw.get("attempt", 0),
        hedge_role=None, outcome="interrupted", stream=True,
    )  # fmt: skip


async def test_a_store_not_answering_yet_is_tried_again_and_a_lease_over_is_dropped(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    store = Flaky(down=3)
    cfg = BudgetsConfig(teams={"t": TeamBudget("t", daily_usd=10.0)}, timezone="UTC")
    gate = BudgetGate(cfg, store, clock=lambda: T0)
    for rid in ("a", "b"):
        await gate.admit(request_id=rid, team="t", user="u", end_user=None,
                         worst_case_usd_micros=5_000_000, worst_case_tokens=100)  # fmt: skip
    day = next(b for b in store._buckets if b.startswith("team:t:day:"))
    assert await store.usage(day, now=T0) == 10_000_000
    dead = DeadReservations(lambda: Admission(gate))
    await nursery.start(dead.run)
    dead.hand([record("a", "attempt", 1_000, 40, attempt=1), record("a", "request", 1_000, 0),
               record("b", "request", 2_000, 0)])  # fmt: skip
    with trio.fail_after(120):  # three refusals, backoff 1, 2, 4 s (virtual)
        while dead.settled < 2:
            await trio.sleep(0.5)
    assert store.down == 0 and dead.dropped == 0
    assert await store.usage(day, now=T0) == 3_000
    assert await store.held("a", now=T0) is None
    # the store down past the lease: nothing to settle any more, the item goes
    store.down = 10**6
    await gate.admit(request_id="c", team="t", user="u", end_user=None,
                     worst_case_usd_micros=1, worst_case_tokens=1)  # fmt: skip
    dead.hand([record("c", "request", 0, 0)])
    with trio.fail_after(gate.lease_s * 3):
        while dead.dropped < 1:
            await trio.sleep(1)
    assert dead.settled == 2


async def test_handing_over_returns_at_once_and_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr("trioproxy.pipeline.dead_reservations.MAX_PENDING", 3)
    dead = DeadReservations(lambda: None)
    dead.hand([record(f"r{i}", "request", 1, 1) for i in range(5)])
    assert dead.dropped == 2


async def test_a_request_its_process_settled_is_not_charged_again_at_its_made_up_rows(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A request whose final records reached the ledger but not the journal (a full disk),
    its process killed after: recovery makes up an interrupted request row from its intents
    and hands it over. The process settled the reservation before it died (the settle follows
    the records, ``Endpoint.account``), so the store holds nothing open for it and the made-up
    cost is not charged beside the real one: a reservation is settled once, by whoever comes
    first (a process killed between its records and its settle left it open: it is settled
    at the made-up cost, once). The ledger keeps the real row (``test_ledger_made_up.py``)."""
    store = MemoryStore()
    cfg = BudgetsConfig(teams={"t": TeamBudget("t", daily_usd=10.0)}, timezone="UTC")
    gate = BudgetGate(cfg, store, clock=lambda: T0)
    ticket = await gate.admit(request_id="a", team="t", user="u", end_user=None,
                              worst_case_usd_micros=5_000_000, worst_case_tokens=100)  # fmt: skip
    await gate.settle(ticket, 61_000, 2_100)
    day = next(b for b in store._buckets if b.startswith("team:t:day:"))
    dead = DeadReservations(lambda: Admission(gate))
    await nursery.start(dead.run)
    dead.hand([record("a", "attempt", 35_000, 1_500, attempt=1),
               record("a", "request", 43_000, 0)])  # fmt: skip
    while dead._pending:
        await trio.testing.wait_all_tasks_blocked()
    await trio.testing.wait_all_tasks_blocked()
    assert dead.settled == 0 and dead.dropped == 0
    assert await store.usage(day, now=T0) == 61_000
