"""BudgetGate on real stores: exact admission under concurrency, denials,
windows, caps and extension, run-time limits, store outages, alerts."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import httpx
import pytest
import trio

from tests.fixtures_servers import RedisServer
from trioproxy.budget import buckets
from trioproxy.budget.alerts import AlertSink
from trioproxy.budget.claims import Claim, Denial
from trioproxy.budget.denials import denied
from trioproxy.budget.gate import BudgetGate, KeyRate, OutagePolicy, Ticket
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.orphans import settle_orphan
from trioproxy.budget.recovery import Recovery
from trioproxy.budget.redis_store import RedisStore
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.budget.store import BudgetStore, StoreUnavailable
from trioproxy.budget.ticket import FAMILIES, Hold
from trioproxy.config.model import BudgetsConfig, TeamBudget, UserWindow
from trioproxy.errors import ErrorKind, PolicyError
from trioproxy.store.redis_client import RedisClient

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=BERLIN).timestamp()


async def until(cond: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not cond():
            await trio.sleep(0.005)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(daily: float | None = 10.0, monthly: float | None = 100.0) -> BudgetsConfig:
    return BudgetsConfig(
        teams={"t": TeamBudget("t", daily_usd=daily, monthly_usd=monthly)},
        users={"u": UserWindow("u", tokens=10_000, window_s=3600)},
        timezone="Europe/Berlin",
    )


async def redis_store(nursery: trio.Nursery, url: str) -> RedisStore:
    client = RedisClient(url, call_timeout=5.0)
    await nursery.start(client.run)
    store = RedisStore(client)
    await store.initialise()  # a fresh state: nothing to rebuild
    return store


async def admit(gate: BudgetGate, rid: str, usd: int, tokens: int = 1, **kw: object) -> Ticket:
    return await gate.admit(
        request_id=rid, team="t", user=str(kw.get("user", "nobody")),
        end_user=kw.get("end_user"),  # type: ignore[arg-type]
        worst_case_usd_micros=usd, worst_case_tokens=tokens,
        reserve_cap_micros=kw.get("cap"),  # type: ignore[arg-type]
    )  # fmt: skip


async def run_thousand(gate: BudgetGate, store: BudgetStore, price: int, n: int) -> None:
    admitted: list[str] = []
    denied: list[PolicyError] = []

    async def one(i: int) -> None:
        try:
            await admit(gate, f"r{i}", price)
            admitted.append(f"r{i}")
        except PolicyError as exc:
            denied.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(one, i)
    assert len(admitted) == n and len(denied) == 1000 - n
    assert {e.kind for e in denied} == {ErrorKind.BUDGET_EXCEEDED}
    spent = await store.usage("team:t:day:2026-11-21", now=T0)
    assert spent == n * price <= 10_000_000


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_thousand_concurrent_admits_fit_exactly(
    kind: str, tmp_path: Path, nursery: trio.Nursery, redis_url: str
) -> None:
    store: BudgetStore
    if kind == "sqlite":
        store = SqliteStore(str(tmp_path / "b.db"))
    else:
        store = await redis_store(nursery, redis_url)
    gate = BudgetGate(config(), store, clock=Clock(), outage=OutagePolicy(call_timeout_s=30))
    # $10 daily fits 233 requests of 42,918 µUSD (233 * 42,918 = 9,999,894)
    await run_thousand(gate, store, 42_918, 233)


async def test_denial_details_and_berlin_midnight_reset() -> None:
    store, clock = MemoryStore(), Clock()
    gate = BudgetGate(config(), store, clock=clock)
    t = await admit(gate, "a", 9_000_000)
    await gate.settle(t, 9_500_000, 10)
    with pytest.raises(PolicyError) as err:
        await admit(gate, "b", 600_000)
    e = err.value
    assert e.kind is ErrorKind.BUDGET_EXCEEDED and e.status == 429
    assert e.details == {"budget": "team:t:day:2026-11-21", "spent_usd": 9.5, "limit": 10.0}
    assert e.retry_after == 12 * 3600  # Berlin midnight
    clock.now = datetime(2026, 11, 21, 23, 59, 59, tzinfo=BERLIN).timestamp()
    with pytest.raises(PolicyError):
        await admit(gate, "c", 600_000)
    clock.now += 1  # local midnight (22:00 UTC... 23:00 UTC): a new day
    t = await admit(gate, "d", 600_000)
    assert t.holds[0].claim.bucket == "team:t:day:2026-11-22"
    assert await store.usage("team:t:month:2026-11", now=clock.now) == 10_100_000


async def test_teams_without_limits_are_counted_and_never_refused() -> None:
    store = MemoryStore()
    gate = BudgetGate(config(daily=None, monthly=None), store, clock=Clock())
    t = await admit(gate, "a", 10**12)
    assert [h.family for h in t.holds] == ["day", "month"]  # so a limit set later binds
    await gate.settle(t, 10**12, 1)
    await admit(gate, "b", 10**12)
    other = BudgetGate(config(daily=None, monthly=None), store, clock=Clock())
    await other.set_team_limits("t", 1_000_000, None)  # through another worker
    with pytest.raises(PolicyError):
        await admit(gate, "c", 1)  # this worker's very next admission


async def test_user_and_end_user_windows() -> None:
    cfg = config()
    clock = Clock()
    gate = BudgetGate(cfg, MemoryStore(), clock=clock, end_user_window=UserWindow("*", 100, 60))
    await admit(gate, "a", 1, tokens=6000, user="u")
    clock.now += 600
    with pytest.raises(PolicyError) as err:
        await admit(gate, "b", 1, tokens=5000, user="u")
    e = err.value
    assert e.kind is ErrorKind.RATE_LIMITED
    assert e.details == {"budget": "user:u", "spent_tokens": 6000, "limit": 10_000}
    assert e.retry_after == 3000  # the first entry leaves the hour window
    await admit(gate, "c", 1, tokens=90, user="x", end_user="alice")
    with pytest.raises(PolicyError) as err:
        await admit(gate, "d", 1, tokens=20, user="x", end_user="alice")
    assert err.value.details["budget"] == "enduser:t:alice"
    await admit(gate, "e", 1, tokens=20, user="x", end_user="bob")


async def test_capped_reservation_extends_then_stops_at_limit() -> None:
    store, clock = MemoryStore(), Clock()
    gate = BudgetGate(config(daily=1.0), store, clock=clock)
    other = await admit(gate, "other", 400_000)
    t = await admit(gate, "s", 2_000_000, tokens=2000, cap=250_000)
    assert (t.reserved_micros, t.reserved_tokens) == (250_000, 250)
    await gate.extend(t, cost_micros=200_000, tokens=200)  # covered: no store call
    assert t.reserved_micros == 250_000
    await gate.extend(t, cost_micros=260_000, tokens=260)  # one cap step
    assert (t.reserved_micros, t.reserved_tokens) == (500_000, 500)
    with pytest.raises(PolicyError) as err:
        await gate.extend(t, cost_micros=510_000, tokens=510)  # 400k + 750k > $1
    assert err.value.kind is ErrorKind.BUDGET_EXCEEDED
    assert "the stream ends here" in err.value.message
    await gate.settle(t, 505_000, 505)  # billed for the chunk it got: the stated overshoot
    await gate.settle(other, 400_000, 1)
    assert await store.usage("team:t:day:2026-11-21", now=clock.now) == 905_000


async def test_a_refused_extension_queues_the_alert_and_settles_what_it_held(
    nursery: trio.Nursery,
) -> None:
    """A stream's extension refused at a level queues the alert check like a refused
    admission, and the refused hold stays out of the ticket: the settle bills what the
    ticket held (one hold per period), the same as without alerts."""
    store, clock = MemoryStore(), Clock()
    sink = AlertSink(store)
    gate = BudgetGate(config(daily=1.0, monthly=None), store, clock=clock, alerts=sink)
    other = await admit(gate, "other", 400_000)
    t = await admit(gate, "s", 2_000_000, tokens=2000, cap=250_000)
    await gate.extend(t, cost_micros=260_000, tokens=260)  # one cap step: 500k held
    held = list(t.holds)
    with pytest.raises(PolicyError) as err:
        await gate.extend(t, cost_micros=510_000, tokens=510)  # 400k + 750k > $1
    assert err.value.kind is ErrorKind.BUDGET_EXCEEDED
    assert t.holds == held
    assert sink.statistics().queued == 1  # 900k of $1 spent or reserved: past 80 %
    await gate.settle(t, 505_000, 505)
    await gate.settle(other, 400_000, 1)
    assert await store.usage("team:t:day:2026-11-21", now=clock.now) == 905_000
    await nursery.start(sink.run)
    await until(lambda: sink.statistics().fired == 1)


async def test_settle_releases_and_is_idempotent() -> None:
    store = MemoryStore()
    gate = BudgetGate(config(), store, clock=Clock())
    t = await admit(gate, "a", 3_000_000, tokens=100, user="u")
    await gate.settle(t, 1_000_000, 40)
    await gate.settle(t, 0, 0)
    assert await store.usage("team:t:day:2026-11-21", now=T0) == 1_000_000
    assert await store.usage("user:u", now=T0) == 40


async def test_limits_change_at_run_time(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "b.db"))
    gate = BudgetGate(config(), store, clock=Clock())
    other = BudgetGate(config(), store, clock=Clock())  # another worker (limits cached 2 s)
    await admit(other, "o", 1)  # it has read (and cached) the old limits
    await admit(gate, "a", 5_000_000)
    await gate.set_team_limits("t", 4_000_000, None)
    with pytest.raises(PolicyError):
        await admit(gate, "b", 1)
    with pytest.raises(PolicyError):
        await admit(other, "c", 1)
    await other.set_team_limits("t", None, None)
    await admit(other, "d", 10**9)


class HangingStore(MemoryStore):
    """Like a network store that stopped answering."""

    timeouts_are_outages = True

    async def reserve(self, *args: object, **kw: object) -> None:  # type: ignore[override]
        await trio.sleep_forever()


async def test_hanging_store_fails_closed_within_timeout(autojump_clock: object) -> None:
    """On a virtual clock: exact times whatever the machine's load."""
    gate = BudgetGate(config(), HangingStore(), clock=Clock(),
                      outage=OutagePolicy(call_timeout_s=0.2, probe_after_s=5))  # fmt: skip
    start = trio.current_time()
    with pytest.raises(PolicyError) as err:
        await admit(gate, "a", 1)
    assert err.value.kind is ErrorKind.OVERLOADED and err.value.status == 503
    assert err.value.retry_after == 5
    assert trio.current_time() - start == pytest.approx(0.2)
    with trio.fail_after(0.05):  # marked down: no second wait
        with pytest.raises(PolicyError):
            await admit(gate, "b", 1)


async def test_a_timed_out_reserve_is_released_and_fail_open_holds_only_its_own(
    autojump_clock: object,
) -> None:
    """The store's reservation that never answered is released; the ticket admitted against
    the local limits carries the local holds alone (not the store's beside them)."""
    gate = BudgetGate(config(), HangingStore(), clock=Clock(),
                      outage=OutagePolicy("fail_open", call_timeout_s=0.2, probe_after_s=5))  # fmt: skip
    ticket = await admit(gate, "a", 1)
    assert ticket.local
    buckets = [h.claim.bucket for h in ticket.holds]
    assert buckets and len(buckets) == len(set(buckets)), buckets


class SlowNetworkStore(MemoryStore):
    """A network store that takes a reservation but answers after the call timeout."""

    timeouts_are_outages = True

    def __init__(self, settle_hangs: bool = False) -> None:
        super().__init__()
        self.settle_hangs = settle_hangs
        self.settles = 0

    async def reserve(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        denial = await super().reserve(*args, **kw)  # type: ignore[arg-type]
        await trio.sleep(1.0)
        return denial

    async def settle(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        self.settles += 1
        if self.settle_hangs:
            await trio.sleep_forever()
        return await super().settle(*args, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_a_reservation_taken_by_a_store_that_then_timed_out_is_released(
    autojump_clock: object, mode: Literal["fail_closed", "fail_open"]
) -> None:
    """The timeout marks the store down; the release goes to it all the same (it was refused
    as "marked down": the reservation held the team's money until its 900 s lease ended)."""
    store = SlowNetworkStore()
    gate = BudgetGate(config(), store, clock=Clock(),
                      outage=OutagePolicy(mode, call_timeout_s=0.2, probe_after_s=5))  # fmt: skip
    if mode == "fail_closed":
        with pytest.raises(PolicyError):
            await admit(gate, "a", 1)
    else:
        assert (await admit(gate, "a", 1)).local
    assert store.settles == 1
    assert store._res["a"].closed  # the money it held is the team's again


async def test_a_release_to_a_hung_store_waits_one_call_timeout(autojump_clock: object) -> None:
    gate = BudgetGate(config(), SlowNetworkStore(settle_hangs=True), clock=Clock(),
                      outage=OutagePolicy(call_timeout_s=0.2, probe_after_s=5))  # fmt: skip
    start = trio.current_time()
    with pytest.raises(PolicyError):
        await admit(gate, "a", 1)
    assert trio.current_time() - start == pytest.approx(0.4)  # reserve, then its release
    start = trio.current_time()
    with pytest.raises(PolicyError):  # marked down: not sent, so nothing to release
        await admit(gate, "b", 1)
    assert trio.current_time() == start


class RefusingStore(MemoryStore):
    """A network store whose connection is refused (Redis down)."""

    timeouts_are_outages = True

    async def reserve(self, *args: object, **kw: object) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        raise StoreUnavailable("connection refused")


async def test_fail_open_tickets_settle_locally_and_the_local_store_is_pruned(
    autojump_clock: object,
) -> None:
    """While the store is down, fail-open tickets hold against this process's share of the
    limits. Their settles went through the down store's calls and were refused ('marked
    down'), so each held its worst case for its 900 s lease: the share ($0.50 of $10) was
    full after 5 requests of $0.10 that cost $0.01. And nothing pruned the local store: one
    window per end user and every reservation stayed until a restart."""
    clock = Clock()
    gate = BudgetGate(config(), RefusingStore(), clock=clock,
                      outage=OutagePolicy("fail_open", call_timeout_s=0.2, probe_after_s=600),
                      end_user_window=UserWindow("*", tokens=1_000_000, window_s=3600))  # fmt: skip
    for i in range(40):
        ticket = await admit(gate, f"r{i}", 100_000, end_user=f"end-user-{i}")
        assert ticket.local
        await gate.settle(ticket, 10_000, 1)
        clock.now += 10
    local = gate._local
    assert len([b for b in local._buckets if b.startswith("enduser:")]) == 40
    clock.now += 3600
    assert (await admit(gate, "after an hour", 1)).local
    assert len(local._res) == 1  # the open one; settled ones went at the prune
    assert len([b for b in local._buckets if b.startswith("enduser:")]) <= 1


class BusyStore(MemoryStore):
    """Like the embedded SQLite store: slow under load, but not gone."""

    timeouts_are_outages = False

    def __init__(self) -> None:
        super().__init__()
        self.slow_calls = 1

    async def reserve(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        if self.slow_calls:
            self.slow_calls -= 1
            await trio.sleep(10)
        return await super().reserve(*args, **kw)  # type: ignore[arg-type]


async def test_busy_embedded_store_fails_one_call_and_is_not_marked_down() -> None:
    gate = BudgetGate(config(), BusyStore(), clock=Clock(),
                      outage=OutagePolicy(call_timeout_s=0.2, probe_after_s=5))  # fmt: skip
    with pytest.raises(PolicyError) as err:
        await admit(gate, "a", 1)
    assert err.value.kind is ErrorKind.OVERLOADED
    await admit(gate, "b", 1)  # the very next call goes to the store again, and succeeds


async def test_redis_down_fail_open_local_limit_then_recovers(
    redis_server: RedisServer, redis_url: str, nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, "trioproxy.budget.outage")
    store = await redis_store(nursery, redis_url)
    # no ledger: the restarted, empty Redis gets this process's journal back (the
    # reservation "before" still held), not $0
    rec = Recovery(store, config, lambda: None, lease_s=900.0, call_timeout_s=0.5, clock=Clock())
    await nursery.start(rec.run)
    policy = OutagePolicy("fail_open", call_timeout_s=0.5, probe_after_s=0.2, fail_open_share=0.1)
    gate = BudgetGate(config(), store, clock=Clock(), outage=policy, recovery=rec)
    closed = BudgetGate(config(), store, clock=Clock(), outage=OutagePolicy(probe_after_s=0.2),
                        recovery=rec)  # fmt: skip
    await admit(gate, "before", 100_000)
    await trio.to_thread.run_sync(redis_server.stop)
    with pytest.raises(PolicyError) as err:
        await admit(closed, "x", 1)
    assert err.value.kind is ErrorKind.OVERLOADED
    admitted = 0
    with trio.fail_after(5):
        for i in range(20):  # local limit: 10% of $10 = $1 = 4 x $0.25
            try:
                t = await admit(gate, f"o{i}", 250_000)
                admitted += 1
                assert t.local
            except PolicyError as exc:
                assert exc.kind is ErrorKind.BUDGET_EXCEEDED
    assert admitted == 4
    await trio.to_thread.run_sync(redis_server.start)
    with trio.fail_after(10):
        while True:
            try:
                t = await admit(closed, "after", 100_000)
                break
            except PolicyError:
                await trio.sleep(0.1)
    assert not t.local
    day = next(h.claim.bucket for h in t.holds if h.family == "day")
    assert await store.usage(day, now=Clock().now) == 200_000  # "before" + "after"
    outages = [r.getMessage() for r in caplog.records if r.name == "trioproxy.budget.outage"]
    assert outages[0].startswith("budget store down") and "fail_closed" in outages[0]
    assert outages[-1] == "budget store is back"


async def test_alerts_fire_once_per_period(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    posts: list[dict[str, object]] = []
    attempts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return httpx.Response(503)  # retried
        posts.append(json.loads(request.content))
        return httpx.Response(204)

    store, clock = MemoryStore(), Clock()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sink = AlertSink(store, webhook_url="http://hook/x", http=http, webhook_backoff_s=0.01)
    await nursery.start(sink.run)
    gate = BudgetGate(config(monthly=None), store, clock=clock, alerts=sink)
    caplog.set_level(logging.WARNING, "trioproxy.budget.alerts")
    for i, cost in enumerate([7_000_000, 1_500_000, 500_000, 1_000_000, 0]):
        t = await admit(gate, f"r{i}", cost)
        await gate.settle(t, cost, 1)
    await until(lambda: len(posts) >= 2)
    await trio.sleep(0.1)  # and nothing more arrives
    assert [(p["budget"], p["level"]) for p in posts] == [
        ("team:t:day:2026-11-21", "threshold"),
        ("team:t:day:2026-11-21", "limit"),
    ]
    assert posts[0]["spent_usd"] >= 8.0 and posts[1]["spent_usd"] == 10.0  # usage when checked
    assert sum("budget_alert" in r.getMessage() for r in caplog.records) == 2
    logged = [getattr(r, "fields", {}) for r in caplog.records]  # structured, not JSON in msg
    assert [(f["budget"], f["level"]) for f in logged if f.get("event") == "budget_alert"] == [
        (p["budget"], p["level"]) for p in posts
    ]
    clock.now += 86400  # next day: fires again
    t = await admit(gate, "next", 9_000_000)
    await gate.settle(t, 9_000_000, 1)
    await until(lambda: len(posts) >= 3)
    assert [p["budget"] for p in posts][-1] == "team:t:day:2026-11-22"
    assert sink.statistics().fired == 3
    await http.aclose()


async def test_alert_queue_full_drops_and_counts() -> None:
    sink = AlertSink(MemoryStore(), capacity=1)
    gate = BudgetGate(config(daily=100.0, monthly=100.0), MemoryStore(), clock=Clock(),
                      alerts=sink)  # fmt: skip
    for i in range(3):  # past the threshold of both from the first settle (85 of 100 USD)
        t = await admit(gate, f"r{i}", 1)
        await gate.settle(t, 85_000_000 if i == 0 else 1, 1)  # 2 checks each (day, month)
    # the day's bucket holds the one place; its later checks replace the pending one,
    # the month's three find no room
    assert sink.statistics().dropped == 3 and sink.statistics().queued == 1


async def test_alert_checks_of_one_bucket_coalesce(nursery: trio.Nursery) -> None:
    """A burst of requests of one team costs one usage read per bucket and round, not one
    per request; the read taken is the newest check's, so no crossing is missed."""
    reads: list[str] = []

    class Counting(MemoryStore):
        async def usage(self, bucket: str, *, now: float) -> int:
            reads.append(bucket)
            return await super().usage(bucket, now=now)

    store = Counting()
    sink = AlertSink(store)
    gate = BudgetGate(config(daily=10.0, monthly=None), store, clock=Clock(), alerts=sink)
    for i in range(50):  # 50 x 0.2 USD = 10 % of the daily limit ... up to 100 %
        t = await admit(gate, f"r{i}", 200_000)
        await gate.settle(t, 200_000, 1)
    assert sink.statistics().queued == 1 and sink.statistics().dropped == 0
    await nursery.start(sink.run)
    await trio.testing.wait_all_tasks_blocked()
    assert len(reads) == 1 and sink.statistics().queued == 0
    assert sink.statistics().fired == 2  # the threshold and the limit, from the newest read


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_an_alert_check_is_queued_only_when_the_settle_reaches_a_level(
    kind: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The settle's store operation answers the periods' totals: a request that leaves its
    team's buckets below every alert level queues no check (no usage read, no mark), one
    that reaches a level queues it, and the alert fires once."""
    store: BudgetStore = MemoryStore() if kind == "memory" else SqliteStore(str(tmp_path / "s"))
    sink = AlertSink(store)
    gate = BudgetGate(config(daily=10.0, monthly=None), store, clock=Clock(), alerts=sink)
    for i in range(7):  # 7 x 1.1 = 7.7 USD: below the threshold (8 USD)
        await gate.settle(await admit(gate, f"r{i}", 1_100_000), 1_100_000, 1)
    assert sink.statistics().queued == 0
    await gate.settle(await admit(gate, "r7", 300_000), 300_000, 1)  # 8.0 USD: at it
    assert sink.statistics().queued == 1
    marks: list[bool] = []
    mark_once = store.mark_once

    async def marking(key: str, *, now: float, expires_at: float) -> bool:
        marks.append(await mark_once(key, now=now, expires_at=expires_at))
        return marks[-1]

    store.mark_once = marking  # type: ignore[method-assign]
    await nursery.start(sink.run)
    await until(lambda: len(marks) == 1)
    assert sink.statistics().fired == 1 and marks == [True]
    await gate.settle(await admit(gate, "r8", 100_000), 100_000, 1)  # past it: checked again
    await until(lambda: len(marks) == 2)  # the sink reads it and finds the level marked
    assert sink.statistics().fired == 1 and marks == [True, False]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_refusal_at_a_level_fires_the_alert_no_settle_reached(
    kind: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A team lead lowers the limit below what the team spent: every request is refused, none
    settles, and the alert must still fire (found by a newcomer at 92.75 % of a lowered limit
    with the Alerts page empty). A refusal below every level queues nothing."""
    store: BudgetStore = MemoryStore() if kind == "memory" else SqliteStore(str(tmp_path / "s"))
    sink = AlertSink(store)
    gate = BudgetGate(config(daily=10.0, monthly=None), store, clock=Clock(), alerts=sink)
    for i in range(5):  # 5.0 USD of 10: below the threshold (8 USD)
        await gate.settle(await admit(gate, f"r{i}", 1_000_000), 1_000_000, 1)
    with pytest.raises(PolicyError):  # 5 + 6 > 10, but 5 of 10 is below every level
        await admit(gate, "big", 6_000_000)
    assert sink.statistics().queued == 0
    await gate.set_team_limits("t", 5_500_000, None)  # lowered: 5.0 of 5.5 = 91 %
    with pytest.raises(PolicyError) as err:
        await admit(gate, "r5", 1_000_000)
    assert err.value.kind is ErrorKind.BUDGET_EXCEEDED
    assert sink.statistics().queued == 1
    await nursery.start(sink.run)
    await until(lambda: sink.statistics().fired == 1)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_per_key_rpm_and_tpm(kind: str, tmp_path: Path) -> None:
    store: BudgetStore = MemoryStore() if kind == "memory" else SqliteStore(str(tmp_path / "s"))
    clock = Clock()
    gate = BudgetGate(config(daily=None, monthly=None), store, clock=clock)
    rate = KeyRate("app", rpm=3, tpm=None)
    for i in range(3):
        await gate.admit(request_id=f"r{i}", team="t", user="x", end_user=None,
                         worst_case_usd_micros=1, worst_case_tokens=1, rate=rate)  # fmt: skip
    with pytest.raises(PolicyError) as err:
        await gate.admit(request_id="r3", team="t", user="x", end_user=None,
                         worst_case_usd_micros=1, worst_case_tokens=1, rate=rate)  # fmt: skip
    assert err.value.kind is ErrorKind.RATE_LIMITED and err.value.status == 429
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 60
    clock.now += 60.5  # the window slid past the first three
    await gate.admit(request_id="r4", team="t", user="x", end_user=None,
                     worst_case_usd_micros=1, worst_case_tokens=1, rate=rate)  # fmt: skip
    # tokens per minute: the worst case is reserved, the actual use is what stays
    tpm = KeyRate("tok", tpm=1000)
    t = await gate.admit(request_id="t1", team="t", user="x", end_user=None,
                         worst_case_usd_micros=1, worst_case_tokens=800, rate=tpm)  # fmt: skip
    with pytest.raises(PolicyError):
        await gate.admit(request_id="t2", team="t", user="x", end_user=None,
                         worst_case_usd_micros=1, worst_case_tokens=800, rate=tpm)  # fmt: skip
    await gate.settle(t, 1, 100)  # used 100 of its 800: 900 left
    await gate.admit(request_id="t3", team="t", user="x", end_user=None,
                     worst_case_usd_micros=1, worst_case_tokens=800, rate=tpm)  # fmt: skip


async def orphan(gate: BudgetGate, rid: str, cost_micros: int, tokens: int) -> bool:
    """What the dead-reservations service asks of ``gate``'s store."""
    return await settle_orphan(gate.store, rid, cost_micros, tokens, now=gate.clock(),
                               timeout_s=gate.outage.call_timeout_s)  # fmt: skip


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_dead_process_reservation_settles_as_its_ticket_would(
    kind: str, tmp_path: Path, nursery: trio.Nursery, redis_url: str
) -> None:
    """settle_orphan (the journal of a dead process recovered: its tickets are gone) reads the
    holds from the store and leaves every bucket where the live settle of the same ticket
    leaves it: the team's day and month, the user's and end user's token windows, the key's
    requests and tokens per minute. Once only; an unknown reservation is not there."""

    async def open_store(name: str) -> BudgetStore:
        if kind == "memory":
            return MemoryStore()
        if kind == "sqlite":
            return SqliteStore(str(tmp_path / name))
        return await redis_store(nursery, redis_url)

    rate = KeyRate("app", rpm=100, tpm=100_000)
    usage: dict[str, dict[str, int]] = {}
    for how in ("live", "orphan"):
        store = await open_store(how)
        ends = UserWindow("*", 10_000, 60)
        gate = BudgetGate(config(), store, clock=Clock(), end_user_window=ends)
        t = await gate.admit(
            request_id=f"{how}-1", team="t", user="u", end_user="e", worst_case_usd_micros=3_000_000,
            worst_case_tokens=900, rate=rate,
        )  # fmt: skip
        assert {buckets.family_of(h.claim.bucket) for h in t.holds} == set(FAMILIES)
        assert all(buckets.family_of(h.claim.bucket) == h.family for h in t.holds)
        if how == "live":
            await gate.settle(t, 1_250_000, 321)
        else:
            dead_gate = BudgetGate(config(), store, clock=Clock(), end_user_window=ends)
            assert await orphan(dead_gate, "orphan-1", 1_250_000, 321)
            assert not await orphan(dead_gate, "orphan-1", 0, 0)  # settled once
            assert not await orphan(dead_gate, "never-made", 5, 5)
        usage[how] = {h.family: await store.usage(h.claim.bucket, now=T0) for h in t.holds}
        if how == "orphan":  # its lease over: counted at what it reserved, nothing to settle
            await gate.admit(request_id="late", team="t", user="u", end_user=None,
                             worst_case_usd_micros=7, worst_case_tokens=7)  # fmt: skip
            lease_over = BudgetGate(config(), store, clock=Clock(T0 + gate.lease_s + 1))
            assert not await orphan(lease_over, "late", 0, 0)
        if kind == "redis":  # the next round's store starts from an empty state
            await store._execute("FLUSHDB")  # type: ignore[attr-defined]
    assert usage["orphan"] == usage["live"]
    assert usage["live"] == {"day": 1_250_000, "month": 1_250_000, "user": 321, "enduser": 321,
                             "rpm": 1, "tpm": 321}  # fmt: skip


def test_a_refusal_says_exhausted_only_when_nothing_is_left() -> None:
    """With money (or tokens) left but less than the request's worst case, the refusal says
    what is left and that a lower max_tokens reserves less, not that the budget is exhausted
    (a team lead reading 'exhausted' beside a 20 % spent figure thinks the gateway is broken)."""
    day = Hold("day", Claim("team:t:day:2026-12-07", 16_436, 300, None))
    user = Hold("user", Claim("user:u", 900, 1000, 3600.0))
    partly = denied("t", [day], Denial(day.claim.bucket, 60, 300, 16_436, None)).message
    assert "exhausted" not in partly and "$0.000240 of $0.000300 left" in partly
    assert "up to $0.016436 for its prompt and its output cap" in partly
    whole = denied("t", [day], Denial(day.claim.bucket, 300, 300, 10, None)).message
    assert whole == "team 't' daily budget exhausted: $0.000300 of $0.000300 spent or reserved"
    window = denied("t", [user], Denial("user:u", 400, 1000, 900, 12.0)).message
    assert "600 of 1000 tokens left" in window and "full" not in window
    full = denied("t", [user], Denial("user:u", 1000, 1000, 900, 12.0)).message
    assert full == "token window 'user:u' full: 1000 of 1000 tokens used"


def test_a_capped_streams_refused_step_is_not_called_an_admission() -> None:
    """A capped stream whose next reservation step does not fit ends with the budget error;
    its message said "less than this request may cost: up to ... for its prompt and its output
    cap, reserved until it ends", the words of a refused admission (found by review)."""
    day = Hold("day", Claim("team:t:day:2026-12-07", 10_000, 300_000, None))
    user = Hold("user", Claim("user:u", 50, 1000, 3600.0))
    money = denied("t", [day], Denial(day.claim.bucket, 295_000, 300_000, 10_000, None),
                   growing=True).message  # fmt: skip
    assert "$0.005000 of $0.300000 left" in money
    assert "next reservation step ($0.010000): the stream ends here" in money
    assert "output cap" not in money
    window = denied("t", [user], Denial("user:u", 980, 1000, 50, 12.0), growing=True).message
    assert "20 of 1000 tokens left" in window and "(50 tokens): the stream ends here" in window
    assert "output cap" not in window


async def test_a_call_sent_despite_the_down_mark_that_lands_ends_the_outage() -> None:
    """A settle retried while the store is marked down goes to it (the retry service paces
    it); when it landed, the store was called back but the mark kept refusing admissions
    until ``probe_after_s`` ran out, while /readyz already said ready (found by review)."""
    from trioproxy.budget.outage import NotSent, StoreCalls
    from trioproxy.budget.store import StoreUnavailable

    calls = StoreCalls(MemoryStore(), OutagePolicy(probe_after_s=3600.0))

    async def fail() -> None:
        raise StoreUnavailable("connection reset")

    async def answer() -> int:
        return 1

    with pytest.raises(StoreUnavailable):
        await calls.call(fail)
    with pytest.raises(NotSent):  # marked down for an hour
        await calls.call(answer)
    assert await calls.call(answer, despite_down=True) == 1  # a release lands: still down
    with pytest.raises(NotSent):
        await calls.call(answer)
    assert await calls.call(answer, despite_down=True, probe=True) == 1  # a retried settle
    assert await calls.call(answer) == 1  # admissions go to the store again
    assert not calls.refusing(trio.current_time())


async def test_a_store_that_fails_every_other_call_is_not_logged_down_and_back_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A state disk gone read-only lets the SQLite store's reads through and fails its
    writes: every probe marked it back, the next write down again, two warnings a second
    (36 pairs in 20 s in a reviewer's run). Now at most one of each per LOG_EVERY_S, the
    next one saying how often it went down meanwhile."""
    from trioproxy.budget.outage import StoreCalls
    from trioproxy.budget.store import StoreUnavailable

    now = [0.0]
    calls = StoreCalls(MemoryStore(), OutagePolicy(probe_after_s=0.0), log_clock=lambda: now[0])

    async def fail() -> None:
        raise StoreUnavailable("read-only file system")

    async def answer() -> int:
        return 1

    async def flap(times: int) -> None:
        for _ in range(times):
            with pytest.raises(StoreUnavailable):
                await calls.call(fail)
            assert await calls.call(answer) == 1

    caplog.set_level(logging.WARNING, logger="trioproxy.budget.outage")
    await flap(20)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioproxy.budget.outage"]
    assert len(lines) == 2 and lines[0].startswith("budget store down (")
    assert lines[1] == "budget store is back"
    now[0] = 11.0  # past LOG_EVERY_S: the next pair says how many were not logged
    await flap(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioproxy.budget.outage"]
    assert len(lines) == 4 and "went down 19 more times since the last such line" in lines[2]
    assert (
        lines[3]
        == "budget store is back (went down and back 19 more times since the last such line)"
    )
