"""A Redis budget state that was lost (FLUSHALL here; kill -9 in test_e2e_redis_loss.py) is
detected by its epoch and rebuilt from the ledger plus each instance's journal: exact
amounts, which one wins for a settle that arrives after the rebuild, single flight across
instances, and the outage policy (never a hang) while the rebuild runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from trioproxy.admin.store import AdminStore
from trioproxy.budget.claims import Claim
from trioproxy.budget.gate import BudgetGate, OutagePolicy, Ticket
from trioproxy.budget.overrides import limits_entry, write_back_safe
from trioproxy.budget.periods import period_at
from trioproxy.budget.policy import KeyLimits, Policy, rate_entry, window_entry
from trioproxy.budget.rebuild import HOUR, Counter, HourSpend, RequestSpend
from trioproxy.budget.recovery import Recovery
from trioproxy.budget.redis_store import RedisStore, Replayed, Restore, new_epoch
from trioproxy.budget.store import TeamLimits
from trioproxy.budget.ticket import KeyRate
from trioproxy.config.model import BudgetsConfig, TeamBudget, UserWindow
from trioproxy.edge.metrics import Metrics
from trioproxy.errors import ErrorKind, PolicyError
from trioproxy.store.redis_client import RedisClient

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=BERLIN).timestamp()
DAY = f"team:t:day:{period_at('day', T0, BERLIN).name}"
CFG = BudgetsConfig(teams={"t": TeamBudget("t", daily_usd=10.0)}, timezone="Europe/Berlin")


class Ledger:
    """A ledger in memory behind the real SpendSource interface (roll-up computed)."""

    def __init__(self) -> None:
        self.records: list[RequestSpend] = []
        self.reads = 0
        self.gate: trio.Event | None = None
        """Set: reads wait for it (a slow ledger)."""
        self.failures = 0
        """Reads that fail first (a ledger database down)."""

    def add(self, rid: str, ts: float, cost: int, tokens: int = 0) -> None:
        self.records.append(RequestSpend(rid, ts, "t", "u", cost, tokens))

    async def hours(self, first_hour: int, end_hour: int, *, by: str) -> list[HourSpend]:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("ledger database down")
        acc: dict[int, tuple[int, int]] = {}
        for r in self.records:
            if first_hour <= r.ts // HOUR < end_hour:
                cost, tokens = acc.get(int(r.ts // HOUR), (0, 0))
                acc[int(r.ts // HOUR)] = (cost + r.cost_micros, tokens + r.tokens)
        name = "t" if by == "team" else "u"
        return [HourSpend(h, name, c, k) for h, (c, k) in acc.items()]

    async def requests(self, ranges: Sequence[tuple[float, float]]) -> list[RequestSpend]:
        return [r for r in self.records if any(lo <= r.ts < hi for lo, hi in ranges)]


class Instance:
    """One gateway instance: its Redis client, store, recovery and gate."""

    def __init__(self, store: RedisStore, rec: Recovery, gate: BudgetGate) -> None:
        self.store, self.rec, self.gate = store, rec, gate

    async def admit(self, rid: str, usd: int = 100_000, tokens: int = 1) -> Ticket:
        return await self.gate.admit(request_id=rid, team="t", user="u", end_user=None,
                                     worst_case_usd_micros=usd, worst_case_tokens=tokens)  # fmt: skip

    async def usage(self) -> int:
        return await self.store.usage(DAY, now=T0)


async def instance(
    nursery: trio.Nursery, url: str, ledger: Ledger, mode: str = "fail_closed",
    cfg: BudgetsConfig = CFG,
) -> Instance:  # fmt: skip
    client = RedisClient(url, call_timeout=5.0)
    await nursery.start(client.run)
    store = RedisStore(client)
    rec = Recovery(store, lambda: cfg, lambda: ledger, lease_s=900.0, call_timeout_s=5.0,
                   clock=lambda: T0)  # fmt: skip
    await nursery.start(rec.run)  # an empty Redis at start-up: rebuilt (from the ledger)
    policy = OutagePolicy(mode, call_timeout_s=5.0, fail_open_share=0.1)  # type: ignore[arg-type]
    return Instance(store, rec, BudgetGate(cfg, store, clock=lambda: T0, outage=policy,
                                           recovery=rec))  # fmt: skip


async def lose_state(i: Instance) -> None:
    await i.store._client.execute("FLUSHALL")


async def detect(i: Instance) -> PolicyError:
    """An admission meets the lost state: refused at once (fail_closed), rebuild started."""
    with trio.fail_after(2), pytest.raises(PolicyError) as err:
        await i.admit("probe")
    assert err.value.kind is ErrorKind.OVERLOADED and err.value.retry_after is not None
    return err.value


async def test_start_up_rebuilds_an_empty_state_from_the_ledger(
    nursery: trio.Nursery, redis_url: str
) -> None:
    ledger = Ledger()
    ledger.add("yesterday", T0 - 86_400, 5_000_000)
    ledger.add("morning", T0 - 3 * HOUR, 1_234_567)  # from the hourly roll-up
    ledger.add("now", T0 - 10, 89)  # a raw record
    i = await instance(nursery, redis_url, ledger)
    assert await i.usage() == 1_234_567 + 89
    assert i.rec.stats.rebuilds == 1 and i.rec.stats.last_counted == 1


async def test_which_amount_wins_after_a_rebuild(nursery: trio.Nursery, redis_url: str) -> None:
    """A request whose ledger record the rebuild read keeps the ledger's amount (its settle
    is a no-op); one the ledger had not seen keeps its reservation, then its settle."""
    ledger = Ledger()
    ledger.add("old", T0 - 3 * HOUR, 1_000_000)
    i = await instance(nursery, redis_url, ledger)
    a, b, c = [await i.admit(rid) for rid in "abc"]
    await i.gate.settle(c, 30_000, 1)  # settled before the loss; not in the ledger yet
    ledger.add("a", T0 - 1, 70_000)  # a's record is written; its settle has not come yet
    await lose_state(i)
    await detect(i)
    await i.rec.wait_restored()
    # ledger (old + a) + b held at its reservation + c settled (journal)
    assert await i.usage() == 1_000_000 + 70_000 + 100_000 + 30_000
    await i.gate.settle(a, 70_000, 1)  # counted: the ledger's amount stands
    assert await i.usage() == 1_000_000 + 70_000 + 100_000 + 30_000
    await i.gate.settle(b, 40_000, 1)  # not counted: its settle replaces its reservation
    assert await i.usage() == 1_000_000 + 70_000 + 40_000 + 30_000
    a.settled = b.settled = False  # a second settle of each is a no-op too
    await i.gate.settle(a, 1, 1)
    await i.gate.settle(b, 1, 1)
    assert await i.usage() == 1_000_000 + 70_000 + 40_000 + 30_000


async def test_settles_during_the_rebuild_are_deferred_then_exact(
    nursery: trio.Nursery, redis_url: str
) -> None:
    ledger = Ledger()
    i = await instance(nursery, redis_url, ledger, mode="fail_open")
    held = [await i.admit(f"h{n}") for n in range(3)]
    ledger.gate = trio.Event()  # the ledger is slow: the rebuild waits on it
    await lose_state(i)
    with trio.fail_after(2):  # fail_open: the local share (10% of $10), at once
        local = await i.admit("local", 1_000)
    assert local.local and i.rec.rebuilding
    for t, cost in zip(held, (1, 20, 300), strict=True):
        with trio.fail_after(2):
            await i.gate.settle(t, cost, 1)  # deferred, not lost
    assert i.rec.stats.rebuilds == 1  # (the start-up one)
    ledger.gate.set()
    await i.rec.wait_restored()
    with trio.fail_after(5):
        while await i.usage() != 321:  # the deferred settles follow the restore
            await trio.sleep(0.01)
    assert i.rec.stats.rebuilds == 2


async def test_a_lock_taken_just_after_another_rebuild_ended_replays_its_epoch(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """Another instance's rebuild ends (its epoch written, its lock freed) between this
    instance's epoch read and its lock: this instance replays into that epoch instead of
    reading the ledger again (a 1,000,000-record ledger takes ~10 s to read; seen as a third
    ledger read in the two-instance test on a loaded box)."""
    ledger = Ledger()
    i = await instance(nursery, redis_url, ledger)
    assert ledger.reads == 1  # the start-up rebuild
    await i.admit("held")
    await lose_state(i)
    lock = i.store.lock_rebuild

    async def after_the_other(token: str, lease_s: float) -> bool:
        if await i.store.read_epoch() is None:
            await i.store.initialise()  # the other instance's rebuild, just ended
        return await lock(token, lease_s)

    i.store.lock_rebuild = after_the_other  # type: ignore[method-assign]
    await detect(i)
    await i.rec.wait_restored()
    assert ledger.reads == 1 and i.rec.stats.rebuilds == 1
    assert i.rec.stats.replays >= 1
    assert await i.usage() == 100_000  # the held reservation, replayed


async def test_two_instances_rebuild_once_and_both_journals_count(
    nursery: trio.Nursery, redis_url: str
) -> None:
    ledger = Ledger()
    ledger.add("old", T0 - 3 * HOUR, 500_000)
    one = await instance(nursery, redis_url, ledger)
    two = await instance(nursery, redis_url, ledger)
    t1 = await one.admit("one")
    t2 = await two.admit("two")
    ledger.gate = trio.Event()
    await lose_state(one)
    await detect(one)
    await detect(two)
    assert one.rec.rebuilding and two.rec.rebuilding
    with trio.fail_after(5):  # both ask; the lock lets one of them read the ledger
        while ledger.reads < 2:  # the first start-up's rebuild, and this one
            await trio.sleep(0.01)
    ledger.gate.set()
    await one.rec.wait_restored()
    await two.rec.wait_restored()
    assert ledger.reads == 2  # single flight: the other waited for the epoch, then replayed
    assert one.rec.stats.rebuilds + two.rec.stats.rebuilds == 2
    assert one.rec.stats.replays + two.rec.stats.replays >= 1
    assert await one.usage() == 500_000 + 100_000 + 100_000  # both held reservations
    await one.gate.settle(t1, 7, 1)
    await two.gate.settle(t2, 8, 1)
    assert await two.usage() == 500_000 + 15


async def test_a_settle_of_a_reservation_from_the_lost_state_is_written_once(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """An instance that did not replay yet (its first call after the new epoch is a settle)
    writes what the request consumed, once."""
    ledger = Ledger()
    one = await instance(nursery, redis_url, ledger)
    two = await instance(nursery, redis_url, ledger)
    t2 = await two.admit("two")
    await lose_state(one)
    await detect(one)
    await one.rec.wait_restored()  # one rebuilt; two has not called the store since
    assert await one.usage() == 0
    await two.gate.settle(t2, 4_242, 1)
    assert await one.usage() == 4_242
    t2.settled = False
    await two.gate.settle(t2, 4_242, 1)
    with trio.fail_after(5):  # two also replays its journal on seeing the new epoch: no-op
        while two.rec.stats.replays < 1:
            await trio.sleep(0.01)
    assert await one.usage() == 4_242


async def test_a_failing_ledger_read_is_retried_under_the_outage_policy(
    nursery: trio.Nursery, redis_url: str
) -> None:
    ledger = Ledger()
    ledger.add("morning", T0 - 3 * HOUR, 250_000)
    i = await instance(nursery, redis_url, ledger)
    ledger.failures = 2
    await lose_state(i)
    await detect(i)
    await i.rec.wait_restored()  # after two failed reads, by the same rebuilder
    assert ledger.reads == 1 + 3 and len(i.rec.stats.errors) == 2
    assert await i.usage() == 250_000


async def test_token_windows_from_roll_up_raw_records_and_journal(
    nursery: trio.Nursery, redis_url: str
) -> None:
    window = UserWindow("u", tokens=10_000, window_s=3 * HOUR)
    cfg = BudgetsConfig(teams=CFG.teams, users={"u": window}, timezone="Europe/Berlin")
    ledger = Ledger()
    ledger.add("gone", T0 - 5 * HOUR, 1, tokens=999)  # its hour ended before the window
    ledger.add("hour", T0 - 2.5 * HOUR, 1, tokens=40)  # rolled up, dated at its hour's end
    ledger.add("raw", T0 - 10, 1, tokens=8)  # a raw record, at its own time
    i = await instance(nursery, redis_url, ledger, cfg=cfg)
    assert await i.store.usage("user:u", now=T0) == 48
    assert await i.store.usage("user:u", now=T0 + HOUR + 1) == 8  # the hour's entry left
    held = await i.admit("held", tokens=100)
    await lose_state(i)
    await detect(i)
    await i.rec.wait_restored()
    assert await i.store.usage("user:u", now=T0) == 48 + 100  # the held claim, replayed
    await i.gate.settle(held, 1, 30)
    assert await i.store.usage("user:u", now=T0) == 48 + 30


async def test_a_rebuild_retried_after_a_failed_chunk_counts_held_reservations_once(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """Attempt 1 writes the counters and replays a held reservation, then stops (a later
    chunk failed); attempt 2 writes the counters again and must replay it again, not skip
    it because attempt 1 left its record: else the reservation is lost from the counter."""
    client = RedisClient(redis_url, call_timeout=5.0)
    await nursery.start(client.run)
    store = RedisStore(client)
    await client.execute("FLUSHALL")
    claim = Claim(DAY, 50, 10**12, None, T0 + 3600, ("t", "daily"))
    held = Replayed("r1", False, T0 + 900, 900, ((claim, T0),))
    assert await store.lock_rebuild("tok", 30)
    kw: dict[str, Any] = {"mode": "rebuild", "token": "tok", "now": T0, "counted_ttl_s": 100}
    for attempt, epoch in enumerate((new_epoch(), new_epoch())):
        counters = Restore(counters=[Counter(DAY, 100, T0 + 3600)])
        assert (await store.restore(counters, epoch=epoch, **kw))[0] == "ok"
        final = attempt == 1  # attempt 1 stops before its final chunk
        assert (await store.restore(Restore(replayed=[held]), epoch=epoch, final=final, **kw))[
            0
        ] == "ok"
    assert await store.usage(DAY, now=T0) == 150  # the ledger's 100 + the held 50
    await store.settle("r1", {DAY: 30}, now=T0 + 1)
    assert await store.usage(DAY, now=T0) == 130


async def test_a_lease_renewed_past_lease_s_is_counted_once_after_a_rebuild(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """A metered stream extends its reservation, and each extend renews the lease: the
    request is held longer than ``lease_s``. Its ledger record is dated at its start, an hour
    before the rebuild's usual raw-record split: the rebuild must still read it as a raw record
    (counted), not from the hourly roll-up while the journal replays it again (twice)."""
    clock = [T0]
    ledger = Ledger()
    client = RedisClient(redis_url, call_timeout=5.0)
    await nursery.start(client.run)
    store = RedisStore(client)
    rec = Recovery(store, lambda: CFG, lambda: ledger, lease_s=900.0, call_timeout_s=5.0,
                   clock=lambda: clock[0])  # fmt: skip
    await nursery.start(rec.run)
    gate = BudgetGate(CFG, store, clock=lambda: clock[0], outage=OutagePolicy(call_timeout_s=5.0),
                      recovery=rec)  # fmt: skip
    i = Instance(store, rec, gate)
    t = await gate.admit(request_id="long", team="t", user="u", end_user=None,
                         worst_case_usd_micros=900_000, worst_case_tokens=90,
                         reserve_cap_micros=100_000)  # fmt: skip
    for step in range(1, 7):  # every 800 s: each extend renews the 900 s lease
        clock[0] = T0 + 800 * step
        await gate.extend(t, cost_micros=100_000 * step + 1, tokens=step)
    clock[0] = T0 + 4_900  # held 4,900 s, settled within its (renewed) lease
    await gate.settle(t, 654_321, 7)
    ledger.add("long", T0 - 1, 654_321)  # its record, dated at the request's start
    assert await store.usage(DAY, now=clock[0]) == 654_321
    clock[0] += 10
    await lose_state(i)
    await detect(i)
    await rec.wait_restored()
    assert await store.usage(DAY, now=clock[0]) == 654_321  # not 2 * 654,321


async def test_overrides_set_at_run_time_survive_a_state_loss(
    nursery: trio.Nursery, redis_url: str, tmp_path: Path
) -> None:
    """Team limits, a user's token window and a key's RPM set from the dashboard live in
    Redis and go with its state; the admin store keeps them, and the rebuild writes them back
    before it admits anything: the limits in force are the admin's, not the config file's."""
    ledger = Ledger()
    admin = AdminStore.open_sync(tmp_path)
    i = await instance(nursery, redis_url, ledger)
    i.rec.overrides = admin  # as the dashboard's mount does
    await i.gate.set_team_limits("t", 150_000, None)  # config: $10 a day
    await i.gate.save_override(*limits_entry("t", 150_000, None))  # as the dashboard does
    for entry in (
        window_entry("u", UserWindow("u", 5, 3_600)),
        rate_entry("k", KeyLimits(1, None)),
    ):
        await i.gate.set_policy(*entry)  # config: no window; the key's own rate: none
        await i.gate.save_override(*entry)
    await admin.save_override("limits:x", "{not json")  # skipped, never stops the rebuild
    i.gate.limits_ttl_s = 0  # no cached policy: each admission reads the store's
    await lose_state(i)
    await detect(i)
    await i.rec.wait_restored()
    assert i.rec.stats.last_overrides == 4
    assert await i.store.get_team_limits("t") == TeamLimits(150_000, None)
    await i.admit("a", usd=100_000, tokens=2)
    with pytest.raises(PolicyError) as err:  # $0.10 + $0.10 > the admin's $0.15
        await i.admit("b", usd=100_000, tokens=2)
    assert err.value.kind is ErrorKind.BUDGET_EXCEEDED
    with pytest.raises(PolicyError) as err:  # 2 + 4 tokens > the admin's window of 5
        await i.admit("c", usd=1, tokens=4)
    assert err.value.kind is ErrorKind.RATE_LIMITED and "user:u" in str(err.value)
    rate = KeyRate("k", rpm=100)
    await i.gate.admit(request_id="d", team="t", user="v", end_user=None,
                       worst_case_usd_micros=1, worst_case_tokens=1, rate=rate)  # fmt: skip
    with pytest.raises(PolicyError) as err:  # the admin's 1 rpm, not the key's 100
        await i.gate.admit(request_id="e", team="t", user="v", end_user=None,
                           worst_case_usd_micros=1, worst_case_tokens=1, rate=rate)  # fmt: skip
    assert err.value.kind is ErrorKind.RATE_LIMITED and "1 of 1 requests" in str(err.value)
    admin.close()


async def test_journal_entries_dropped_at_the_cap_are_counted_and_logged(
    nursery: trio.Nursery, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Settled reservations beyond the journal's cap drop out oldest first; each drop is
    counted (the ``budget_journal_dropped`` metric mirrors it) and logged, once a minute."""
    i = await instance(nursery, redis_url, Ledger())
    i.rec.journal.recent_max = 3
    caplog.set_level(logging.WARNING, logger="trioproxy.budget.replay_journal")
    for n in range(5):
        await i.gate.settle(await i.admit(f"r{n}", usd=1), 1, 1)
    assert i.rec.stats.dropped == 2
    assert len(i.rec.journal.replayed(T0)) == 3  # r2..r4
    warned = [r for r in caplog.records if "budget journal full" in r.getMessage()]
    assert len(warned) == 1  # the first drop; the second is within the minute
    await i.gate.settle(await i.admit("r5", usd=1), 1, 1)
    warned = [r for r in caplog.records if "budget journal full" in r.getMessage()]
    assert i.rec.stats.dropped == 3 and len(warned) == 1
    metrics = Metrics()
    metrics.sample(in_flight=0, open_streams=0, relay_buffered=0, breakers={},
                   counts={"budget_journal_dropped": i.rec.stats.dropped})  # fmt: skip
    assert b"trioproxy_budget_journal_dropped_total 3.0" in metrics.render()[0]


async def test_thousands_of_overrides_are_written_back_in_a_few_round_trips(
    nursery: trio.Nursery, redis_url: str, tmp_path: Path
) -> None:
    """3,000 teams' limits and 1,000 policy entries come back after a state loss; the
    write-back sends them pipelined (many commands in flight at once), not one round trip
    each under the rebuild's 4 x call timeout."""
    ledger = Ledger()
    admin = AdminStore.open_sync(tmp_path)
    i = await instance(nursery, redis_url, ledger)
    i.rec.overrides = admin
    for n in range(3_000):
        await admin.save_override(*limits_entry(f"team{n}", 1_000 + n, None))
    for n in range(1_000):
        await admin.save_override(*window_entry(f"user{n}", UserWindow(f"user{n}", 10 + n, 60)))
    client = i.store._client
    inflight = peak = 0
    execute = client.execute

    async def counted(*args: Any) -> Any:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            return await execute(*args)
        finally:
            inflight -= 1

    client.execute = counted  # type: ignore[method-assign]
    await lose_state(i)
    await detect(i)
    await i.rec.wait_restored()
    assert i.rec.stats.last_overrides == 4_000
    assert peak >= 100, peak  # pipelined: sequential writes would keep it at 1 or 2
    assert await i.store.get_team_limits("team0") == TeamLimits(1_000, None)
    assert await i.store.get_team_limits("team2999") == TeamLimits(3_999, None)
    windows = Policy.decode(await i.store.get_policy()).windows
    assert len(windows) == 1_000 and windows["user999"] == UserWindow("user999", 1_009, 60)
    admin.close()


@pytest.mark.parametrize(
    ("database_url", "redis_url", "safe"),
    [
        ("postgresql://db.internal/trio", "redis://redis.internal:6379", True),  # one log
        (None, "redis://127.0.0.1:6379/0", True),  # this host's Redis: its log is the only one
        (None, "redis://localhost:6379", True),
        (None, "redis://[::1]:6379", True),
        (None, "unix:///run/redis/redis.sock", True),
        (None, "redis://redis.internal:6379", False),  # maybe shared: a copy may be stale
        (None, "rediss://10.0.0.5:6380", False),
        (None, None, False),
    ],
)
def test_a_per_host_override_log_is_written_back_only_beside_this_hosts_redis(
    database_url: str | None, redis_url: str | None, safe: bool
) -> None:
    """Host A sets $100, host B sets $50, each in its own SQLite file, one shared Redis;
    Redis is lost and A rebuilds: writing A's copy back would raise the limit to $100. So a
    per-host log is written back only when Redis is this host's alone."""
    assert write_back_safe(database_url, redis_url) is safe
