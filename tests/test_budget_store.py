"""Reservation semantics, identical on every store (memory, SQLite, Redis)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from trioproxy.budget.claims import Claim
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.redis_store import RedisStore
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.budget.store import (
    FROM_CONFIG,
    NO_OVERRIDES,
    BudgetStore,
    ReservationClosed,
    TeamLimits,
)
from trioproxy.store.redis_client import RedisClient

T0 = 1_795_000_000.0
DAY = Claim("team:a:day:2026-11-22", 0, 1000, None, T0 + 3600)


async def open_redis_store(nursery: trio.Nursery, url: str) -> RedisStore:
    client = RedisClient(url, call_timeout=5.0)
    await nursery.start(client.run)
    store = RedisStore(client)
    await store.initialise()  # a fresh state: nothing to rebuild
    return store


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery, redis_url: str
) -> AsyncIterator[BudgetStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "budget.db"))
        yield s
        s.close()
    else:
        yield await open_redis_store(nursery, redis_url)


def day(amount: int, limit: int = 1000) -> Claim:
    return Claim(DAY.bucket, amount, limit, None, DAY.expires_at)


def win(amount: int, limit: int = 100, window_s: float = 60.0) -> Claim:
    return Claim("user:u", amount, limit, window_s)


async def test_reserve_is_all_or_nothing(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(600), win(50)], now=T0, lease_s=60) is None
    denial = await store.reserve("r2", [day(300), win(60)], now=T0, lease_s=60)
    assert denial is not None and denial.bucket == "user:u"
    assert (denial.used, denial.limit, denial.amount) == (50, 100, 60)
    assert await store.usage(DAY.bucket, now=T0) == 600  # day(300) not taken either
    assert await store.usage("user:u", now=T0) == 50
    denial = await store.reserve("r3", [day(401), win(1)], now=T0, lease_s=60)
    assert denial is not None and denial.bucket == DAY.bucket
    assert denial.retry_after == pytest.approx(3600.0)  # the period's end
    assert await store.reserve("r4", [day(400), win(50)], now=T0, lease_s=60) is None
    assert await store.usage(DAY.bucket, now=T0) == 1000


async def test_duplicate_reserve_is_refused(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(1)], now=T0, lease_s=60) is None
    with pytest.raises(ValueError, match="already exists"):
        await store.reserve("r1", [day(1)], now=T0, lease_s=60)


async def test_settle_releases_rest_and_is_idempotent(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(600), win(80)], now=T0, lease_s=60) is None
    await store.settle("r1", {DAY.bucket: 250, "user:u": 30}, now=T0 + 1)
    assert await store.usage(DAY.bucket, now=T0 + 1) == 250
    assert await store.usage("user:u", now=T0 + 1) == 30
    await store.settle("r1", {DAY.bucket: 0, "user:u": 0}, now=T0 + 2)  # retry: no effect
    assert await store.usage(DAY.bucket, now=T0 + 2) == 250
    assert await store.usage("user:u", now=T0 + 2) == 30
    await store.settle("unknown", {DAY.bucket: 5}, now=T0 + 2)
    assert await store.usage(DAY.bucket, now=T0 + 2) == 250


async def test_settle_missing_bucket_counts_zero(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(600), win(80)], now=T0, lease_s=60) is None
    await store.settle("r1", {DAY.bucket: 100}, now=T0 + 1)
    assert await store.usage("user:u", now=T0 + 1) == 0
    assert await store.usage(DAY.bucket, now=T0 + 1) == 100


async def test_extend_adds_atomically_and_renews_lease(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(300), win(10)], now=T0, lease_s=10) is None
    assert await store.reserve("r2", [day(500)], now=T0, lease_s=10) is None
    denial = await store.extend("r1", [day(201), win(5)], now=T0 + 8)
    assert denial is not None and denial.bucket == DAY.bucket and denial.used == 800
    assert await store.usage("user:u", now=T0 + 8) == 10  # all or nothing
    assert await store.extend("r1", [day(200), win(5)], now=T0 + 8) is None
    assert await store.usage(DAY.bucket, now=T0 + 8) == 1000
    # lease renewed at T0+8 for 10 s: a settle at T0+15 still applies
    await store.settle("r1", {DAY.bucket: 450, "user:u": 12}, now=T0 + 15)
    assert await store.usage(DAY.bucket, now=T0 + 15) == 950  # r2 still holds 500
    assert await store.usage("user:u", now=T0 + 15) == 12
    with pytest.raises(ReservationClosed):
        await store.extend("r1", [day(1)], now=T0 + 16)


async def test_unsettled_reservation_expires_counted_at_reserved(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(700), win(40)], now=T0, lease_s=30) is None
    with pytest.raises(ReservationClosed):
        await store.extend("r1", [day(1)], now=T0 + 31)
    await store.settle("r1", {DAY.bucket: 0, "user:u": 0}, now=T0 + 31)  # too late
    assert await store.usage(DAY.bucket, now=T0 + 31) == 700
    assert await store.usage("user:u", now=T0 + 31) == 40
    denial = await store.reserve("r2", [day(301)], now=T0 + 32, lease_s=30)
    assert denial is not None and denial.used == 700


async def test_settle_above_reserved_records_actual(store: BudgetStore) -> None:
    assert await store.reserve("r1", [day(100)], now=T0, lease_s=30) is None
    await store.settle("r1", {DAY.bucket: 130}, now=T0 + 1)
    assert await store.usage(DAY.bucket, now=T0 + 1) == 130


async def test_window_slides_and_retry_after(store: BudgetStore) -> None:
    assert await store.reserve("a", [win(40)], now=T0, lease_s=600) is None
    assert await store.reserve("b", [win(30)], now=T0 + 10, lease_s=600) is None
    assert await store.reserve("c", [win(30)], now=T0 + 20, lease_s=600) is None
    denial = await store.reserve("d", [win(50)], now=T0 + 30, lease_s=600)
    # 50 fits once a (40) and b (30) have left: b leaves at T0+10+60
    assert denial is not None and denial.retry_after == pytest.approx(40.0)
    denial = await store.reserve("d", [win(101)], now=T0 + 30, lease_s=600)
    assert denial is not None and denial.retry_after is None  # never fits
    assert await store.usage("user:u", now=T0 + 60) == 60  # a left (ts <= now - 60)
    denial = await store.reserve("d", [win(50)], now=T0 + 69.5, lease_s=600)
    assert denial is not None and denial.retry_after == pytest.approx(0.5)
    assert await store.reserve("d", [win(50)], now=T0 + 70, lease_s=600) is None
    assert await store.usage("user:u", now=T0 + 70) == 80
    # settling a slid-out entry changes nothing in the window
    await store.settle("a", {"user:u": 0}, now=T0 + 70)
    assert await store.usage("user:u", now=T0 + 70) == 80


async def test_team_limits_and_marks(store: BudgetStore) -> None:
    assert await store.get_team_limits("a") is None
    await store.set_team_limits("a", 5_000_000, None)
    limits = await store.get_team_limits("a")
    assert limits is not None and (limits.daily_micros, limits.monthly_micros) == (5_000_000, None)
    assert await store.mark_once("alert:a:day:80", now=T0, expires_at=T0 + 100) is True
    assert await store.mark_once("alert:a:day:80", now=T0 + 1, expires_at=T0 + 100) is False


async def test_concurrent_reservations_fit_exactly(store: BudgetStore) -> None:
    """1,000 concurrent reservations against a budget that fits exactly 137."""
    n, price = 137, 7_300
    limit = n * price + price - 1
    admitted: list[str] = []

    async def one(i: int) -> None:
        claim = Claim("team:c:day:2026-11-22", price, limit, None, T0 + 3600)
        if await store.reserve(f"q{i}", [claim], now=T0, lease_s=60) is None:
            admitted.append(f"q{i}")

    async with trio.open_nursery() as nursery:
        for i in range(1000):
            nursery.start_soon(one, i)
    assert len(admitted) == n
    assert await store.usage("team:c:day:2026-11-22", now=T0) == n * price <= limit


async def test_claim_naming_a_team_is_checked_against_its_stored_limit(
    store: BudgetStore,
) -> None:
    """Issue 10 item 8: the atomic check reads the limit the store holds now."""
    ref = Claim(DAY.bucket, 300, 1000, None, DAY.expires_at, ("a", "daily"))
    assert await store.reserve("r1", [ref], now=T0, lease_s=60) is None  # no stored limit: 1000
    await store.set_team_limits("a", 500, None)
    denial = await store.reserve("r2", [ref], now=T0, lease_s=60)  # 300 + 300 > 500
    assert denial is not None and (denial.used, denial.limit) == (300, 500)
    await store.set_team_limits("a", None, 1)  # daily: none now; the monthly one is not this
    assert await store.reserve("r3", [ref], now=T0, lease_s=60) is None
    assert await store.usage(DAY.bucket, now=T0) == 600
    month = Claim("team:a:month:2026-11", 2, 10**9, None, DAY.expires_at, ("a", "monthly"))
    denial = await store.reserve("r4", [month], now=T0, lease_s=60)
    assert denial is not None and denial.limit == 1
    await store.set_team_limits("a", 550, None)  # an extension is checked the same way
    assert await store.extend("r1", [ref], now=T0) is not None


async def test_policy_overrides_are_shared_strings(store: BudgetStore) -> None:
    assert await store.get_policy() == {}
    await store.set_policy("threshold:a b/é", "0.5")
    await store.set_policy("window:u", '{"tokens": 5, "window_s": 60}')
    await store.set_policy("threshold:a b/é", "null")  # replaced, not added
    assert await store.get_policy() == {
        "threshold:a b/é": "null",
        "window:u": '{"tokens": 5, "window_s": 60}',
    }


async def test_reserve_reports_window_usage_in_the_same_operation(store: BudgetStore) -> None:
    """``usage=`` gets each window bucket's spent + reserved after the reservation (the
    rate-limit headers' numbers, without a second round trip); period buckets are left out,
    and a denied reservation reports nothing."""
    rpm = Claim("key:k:rpm", 1, 10, 60.0)
    got: dict[str, int] = {}
    assert await store.reserve("a", [day(100), win(40), rpm], now=T0, lease_s=60, usage=got) is None
    assert got == {"user:u": 40, "key:k:rpm": 1}
    got = {}
    assert (
        await store.reserve("b", [win(25), win(5), rpm], now=T0 + 10, lease_s=60, usage=got) is None
    )
    assert got == {"user:u": 70, "key:k:rpm": 2}  # two claims on one bucket: one sum
    got = {}
    assert await store.reserve("c", [win(31)], now=T0 + 20, lease_s=60, usage=got) is not None
    assert got == {}
    got = {}  # 'a' slid out of the window: its 40 no longer counts
    assert await store.reserve("d", [win(1), rpm], now=T0 + 60, lease_s=60, usage=got) is None
    assert got == {"user:u": 31, "key:k:rpm": 2}
    assert await store.usage("user:u", now=T0 + 60) == 31


async def test_a_failing_operation_in_a_batch_is_undone_alone(store: BudgetStore) -> None:
    """Operations that share one transaction (the SQLite store's group commit): one that
    fails leaves nothing behind, those beside it take effect, each answered as if alone."""
    assert await store.reserve("r0", [day(100)], now=T0, lease_s=60) is None
    got: dict[str, BaseException | object] = {}

    async def one(rid: str, claims: list[Claim]) -> None:
        try:
            got[rid] = await store.reserve(rid, claims, now=T0, lease_s=60)
        except ValueError as exc:
            got[rid] = exc

    async with trio.open_nursery() as nursery:  # r1..r4 queue while r5 leads: one batch
        nursery.start_soon(one, "r5", [day(1)])
        nursery.start_soon(one, "r1", [day(10), win(5)])
        nursery.start_soon(one, "r0", [day(200), win(7)])  # taken: refused, nothing kept
        nursery.start_soon(one, "r2", [win(2)])
        nursery.start_soon(one, "r3", [day(20)])
    assert isinstance(got.pop("r0"), ValueError)
    assert got == {"r1": None, "r2": None, "r3": None, "r5": None}
    assert await store.usage(DAY.bucket, now=T0) == 100 + 1 + 10 + 20
    assert await store.usage("user:u", now=T0) == 5 + 2


def test_sqlite_batch_undoes_a_failing_operation_alone(tmp_path: Path) -> None:
    """The SQLite store's batch of operations without a SAVEPOINT each: when one raises after
    it wrote, the batch runs again with savepoints: its writes are undone, the others kept."""
    from trioproxy.budget.group_commit import Op

    s = SqliteStore(str(tmp_path / "b.db"))

    def write(name: str, fail: bool = False) -> Callable[[sqlite3.Connection], object]:
        def fn(db: sqlite3.Connection) -> object:
            db.execute("INSERT INTO policy(name, value) VALUES (?, 'x')", (name,))
            if fail:
                raise ValueError(name)
            return name

        return fn

    ops = [Op(write("a")), Op(write("b", fail=True)), Op(write("c"))]
    s._commit.tx_batch(ops)
    assert [(o.result, type(o.error)) for o in ops] == [
        ("a", type(None)), (None, ValueError), ("c", type(None))
    ]  # fmt: skip
    assert s._db.execute("SELECT name FROM policy ORDER BY name").fetchall() == [("a",), ("c",)]
    s.close()


async def test_a_denied_claim_gives_back_the_periods_taken_before_it(store: BudgetStore) -> None:
    """All or nothing across calendar periods too (the SQLite store takes a period's claim
    in the statement that checks it, and gives it back when a later claim has no room)."""
    month = Claim("team:a:month:2026-11", 0, 500, None, T0 + 86400)
    assert await store.reserve("r1", [day(100), Claim(month.bucket, 450, 500, None,
                                                      month.expires_at)], now=T0, lease_s=60) is None  # fmt: skip
    denial = await store.reserve(
        "r2", [day(300), Claim(month.bucket, 60, 500, None, month.expires_at), win(5)],
        now=T0, lease_s=60,
    )  # fmt: skip
    assert denial is not None and denial.bucket == month.bucket
    assert (denial.used, denial.limit, denial.amount) == (450, 500, 60)
    assert denial.retry_after == pytest.approx(86400.0)
    assert await store.usage(DAY.bucket, now=T0) == 100
    assert await store.usage(month.bucket, now=T0) == 450
    assert await store.usage("user:u", now=T0) == 0
    denial = await store.reserve("r3", [win(5), day(901)], now=T0, lease_s=60)
    assert denial is not None and denial.bucket == DAY.bucket and denial.used == 100
    assert await store.usage("user:u", now=T0) == 0


LEGACY_SCHEMA = """
CREATE TABLE buckets(
    bucket TEXT PRIMARY KEY, window_s REAL, total INTEGER NOT NULL DEFAULT 0, expires_at REAL);
CREATE TABLE wlog(
    bucket TEXT NOT NULL, rid TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    amount INTEGER NOT NULL, PRIMARY KEY (bucket, rid, seq));
CREATE TABLE reservations(
    rid TEXT PRIMARY KEY, lease_s REAL NOT NULL, lease_until REAL NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE holds(
    rid TEXT NOT NULL, seq INTEGER NOT NULL, bucket TEXT NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (rid, seq));
INSERT INTO buckets VALUES ('team:a:day:2026-11-22', NULL, 600, 1795003600.0);
INSERT INTO buckets VALUES ('user:u', 60.0, 80, NULL);
INSERT INTO wlog VALUES ('user:u', 'old', 2, 1795000000.0, 80);
INSERT INTO reservations VALUES ('old', 60.0, 1795000060.0, 0, 2);
INSERT INTO holds VALUES ('old', 1, 'team:a:day:2026-11-22', 600);
INSERT INTO holds VALUES ('old', 2, 'user:u', 80);
INSERT INTO reservations VALUES ('old2', 60.0, 1795000060.0, 0, 1);
INSERT INTO holds VALUES ('old2', 1, 'team:a:day:2026-11-22', 0);
"""


async def test_sqlite_reservations_made_before_the_holds_column_settle_and_extend(
    tmp_path: Path,
) -> None:
    """A budget file written by a version that kept holds in their own table (its
    reservations open across the upgrade): opened, its reservations extend and settle."""
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript(LEGACY_SCHEMA)
    db.close()
    s = SqliteStore(path)
    assert await s.extend("old2", [day(50), win(10)], now=T0 + 1) is None
    assert await s.usage(DAY.bucket, now=T0 + 1) == 650
    await s.settle("old", {DAY.bucket: 250, "user:u": 30}, now=T0 + 2)
    assert await s.usage(DAY.bucket, now=T0 + 2) == 300
    assert await s.usage("user:u", now=T0 + 2) == 40
    await s.settle("old2", {DAY.bucket: 20, "user:u": 4}, now=T0 + 3)
    assert await s.usage(DAY.bucket, now=T0 + 3) == 270
    assert await s.usage("user:u", now=T0 + 3) == 34
    assert await s.reserve("new", [day(5), win(1)], now=T0 + 4, lease_s=60) is None
    assert await s.usage(DAY.bucket, now=T0 + 4) == 275
    s.close()
    SqliteStore(path).close()  # opened again: the column is there already


def test_sqlite_prune_reads_index_ranges_not_whole_tables(tmp_path: Path) -> None:
    """The prune runs inside a reservation's batch: a scan of a table that grows with traffic
    (two days of reservations, an hour of window entries, a bucket per end user) held every
    admission up for ~0.1-5 s per million rows. Every statement it runs must search an
    index on those tables."""
    import re

    s = SqliteStore(str(tmp_path / "b.db"))
    db = s._db
    now = T0
    with db:
        db.execute("INSERT INTO buckets(bucket, window_s, total) VALUES ('user:u', 60, 3)")
        db.executemany("INSERT INTO wlog(bucket, rid, seq, ts, amount, expires) "
                       "VALUES ('user:u', ?, 1, ?, 1, ?)",
                       [(f"r{i}", now - 100 + 50 * i, now - 40 + 50 * i) for i in range(3)])  # fmt: skip
        db.executemany("INSERT INTO reservations(rid, lease_s, lease_until) VALUES (?, 1, ?)",
                       [(f"r{i}", now - 3 * 86400 + i * 86400) for i in range(3)])  # fmt: skip
    ran: list[str] = []
    db.set_trace_callback(ran.append)
    with db:
        s._prune(db, now)
    db.set_trace_callback(None)
    statements = [q for q in ran if re.match(r"(SELECT|UPDATE|DELETE|INSERT)", q)]
    assert len(statements) >= 5
    for sql in statements:
        plan = " / ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert not re.search(r"\bSCAN (reservations|wlog|holds|buckets|marks)\b", plan), (
            sql, plan)  # fmt: skip
    assert db.execute("SELECT total FROM buckets WHERE bucket = 'user:u'").fetchone() == (2,)
    assert db.execute("SELECT COUNT(*) FROM wlog").fetchone() == (2,)  # the oldest slid out
    assert [r for (r,) in db.execute("SELECT rid FROM reservations ORDER BY rid")] == ["r1", "r2"]
    s.close()


def test_sqlite_window_entries_of_a_file_made_before_expires_are_retired(tmp_path: Path) -> None:
    """A file whose ``wlog`` has no ``expires`` column gets it at open, filled from each
    entry's bucket, and the prune retires those entries like new ones."""
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE buckets(bucket TEXT PRIMARY KEY, window_s REAL, "
        "total INTEGER NOT NULL DEFAULT 0, expires_at REAL);"
        "CREATE TABLE wlog(bucket TEXT NOT NULL, rid TEXT NOT NULL, seq INTEGER NOT NULL, "
        "ts REAL NOT NULL, amount INTEGER NOT NULL, PRIMARY KEY (bucket, rid, seq));"
        f"INSERT INTO buckets VALUES ('user:u', 60, 5, NULL);"
        f"INSERT INTO wlog VALUES ('user:u', 'r0', 1, {T0 - 100}, 2);"
        f"INSERT INTO wlog VALUES ('user:u', 'r1', 1, {T0 - 10}, 3);"
    )
    old.commit()
    old.close()
    before = time.time()
    s = SqliteStore(path)
    db = s._db
    assert db.execute("SELECT rid, expires FROM wlog ORDER BY rid").fetchall() == [
        ("r0", T0 - 40), ("r1", T0 + 50)
    ]  # fmt: skip
    (ends,) = db.execute("SELECT expires_at FROM buckets").fetchone()
    assert before + 60 <= ends <= time.time() + 60  # a window after the upgrade: it can go
    with db:
        s._prune(db, T0)
    assert db.execute("SELECT total FROM buckets").fetchall() == [(3,)]
    assert db.execute("SELECT rid FROM wlog").fetchall() == [("r1",)]
    s.close()


async def test_sqlite_an_idle_users_window_bucket_goes_after_the_retention(
    tmp_path: Path,
) -> None:
    """A window's bucket carries its last take's end: once every entry slid out and the
    retention passed, the prune drops it (end users' buckets are not kept forever); a new
    take starts it again from zero."""
    s = SqliteStore(str(tmp_path / "b.db"))
    db = s._db
    window = Claim("enduser:e1", 10, 100, 60.0)
    assert await s.reserve("r1", [window], now=T0, lease_s=30) is None
    await s.settle("r1", {"enduser:e1": 4}, now=T0 + 1)
    assert db.execute("SELECT expires_at FROM buckets").fetchall() == [(T0 + 60,)]
    with db:
        s._prune(db, T0 + 61)  # the entry slid out; the bucket stays (within the retention)
    assert db.execute("SELECT total FROM buckets").fetchall() == [(0,)]
    with db:
        s._prune(db, T0 + 61 + 2 * 86400)
    assert db.execute("SELECT COUNT(*) FROM buckets").fetchone() == (0,)
    later = T0 + 3 * 86400
    assert await s.reserve("r2", [window], now=later, lease_s=30) is None
    assert await s.usage("enduser:e1", now=later) == 10
    s.close()


async def test_sqlite_a_bucket_goes_with_every_entry_it_still_has(tmp_path: Path) -> None:
    """An entry without ``expires`` (written by a worker of the previous version while the
    file was upgraded) is never retired by the prune; it goes with its bucket, so the bucket
    made again later does not count it."""
    s = SqliteStore(str(tmp_path / "b.db"))
    db = s._db
    window = Claim("enduser:e1", 10, 100, 60.0)
    assert await s.reserve("r1", [window], now=T0, lease_s=30) is None
    with db:  # the old worker's entry: amount 7, no expires
        db.execute("INSERT INTO wlog(bucket, rid, seq, ts, amount) VALUES ('enduser:e1', 'old', "
                   f"1, {T0}, 7)")  # fmt: skip
        db.execute("UPDATE buckets SET total = total + 7")
    with db:
        s._prune(db, T0 + 61 + 2 * 86400)
    assert db.execute("SELECT COUNT(*) FROM wlog").fetchone() == (0,)
    later = T0 + 3 * 86400
    assert await s.reserve("r2", [window], now=later, lease_s=30) is None
    assert await s.usage("enduser:e1", now=later + 1) == 10  # not 10 - 7
    s.close()


def test_sqlite_open_waits_out_another_process_building_the_schema(tmp_path: Path) -> None:
    """A worker starting while another builds the schema (an upgrade's indexes over millions
    of rows: seconds) waits for it, past its operations' own busy timeout, which it keeps."""
    import threading

    path = str(tmp_path / "b.db")
    SqliteStore(path).close()  # the file exists, in WAL mode, without one index (below)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("DROP INDEX reservations_lease")
    other.execute("BEGIN IMMEDIATE")  # the other process builds it, not committed yet
    other.execute("CREATE INDEX reservations_lease ON reservations(lease_until)")
    opened: list[SqliteStore] = []
    failed: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(SqliteStore(path, busy_timeout_s=0.05))
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=start)
    worker.start()
    worker.join(timeout=1.0)  # 20x its busy timeout: the old open had failed by now
    other.execute("COMMIT")
    worker.join(timeout=60)
    other.close()
    assert failed == [] and len(opened) == 1
    store = opened[0]
    assert store._db.execute("PRAGMA busy_timeout").fetchone() == (50,)
    store.close()


# --- run-time edits: only the fields named, atomically, answering what they replaced ------


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def two_handles(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery, redis_url: str
) -> AsyncIterator[tuple[BudgetStore, BudgetStore]]:
    """One state through two handles (two processes, two instances: a connection each)."""
    if request.param == "memory":
        store = MemoryStore()
        yield store, store
    elif request.param == "sqlite":
        one, two = SqliteStore(str(tmp_path / "b.db")), SqliteStore(str(tmp_path / "b.db"))
        yield one, two
        one.close()
        two.close()
    else:
        yield await open_redis_store(nursery, redis_url), await open_redis_store(nursery, redis_url)


async def test_an_edit_writes_only_the_limits_it_names(store: BudgetStore) -> None:
    # nothing stored: the edit starts from the config's, and writes nothing that is no change
    same = await store.update_team_limits("a", {"daily": FROM_CONFIG})
    assert same == (NO_OVERRIDES, NO_OVERRIDES) and await store.get_team_limits("a") is None
    old, new = await store.update_team_limits("a", {"monthly": 50})
    assert (old, new) == (NO_OVERRIDES, TeamLimits(FROM_CONFIG, 50))
    assert await store.get_team_limits("a") == new
    old, new = await store.update_team_limits("a", {"daily": None})
    assert (old, new) == (TeamLimits(FROM_CONFIG, 50), TeamLimits(None, 50))  # cleared
    both = {"daily": 7, "monthly": 8}
    assert await store.update_team_limits("a", both) == (new, TeamLimits(7, 8))
    assert await store.get_team_limits("a") == TeamLimits(7, 8)
    assert await store.get_team_limits("b") is None
    with pytest.raises(ValueError, match="unknown limit fields"):
        await store.update_team_limits("a", {"weekly": 1})


async def test_concurrent_edits_of_a_teams_limits_are_one_exact_history(
    two_handles: tuple[BudgetStore, BudgetStore],
) -> None:
    """Edits of the daily and of the monthly limit at once, through two handles: every one
    lands (none writes back a limit it did not name), and what each answers (the limits it
    replaced and wrote) chains into one history from the first limits to the last."""
    n = 40
    answers: list[tuple[TeamLimits, TeamLimits]] = []

    async def edit(store: BudgetStore, field: str, value: int) -> None:
        answers.append(await store.update_team_limits("a", {field: value}))

    async with trio.open_nursery() as nursery:
        for i in range(1, n + 1):
            nursery.start_soon(edit, two_handles[i % 2], "daily", 1_000 + i)
            nursery.start_soon(edit, two_handles[(i + 1) % 2], "monthly", 2_000 + i)
    after = dict(answers)
    assert len(after) == 2 * n  # every state an edit started from was another's result...
    state, seen = NO_OVERRIDES, 0
    while state in after:  # ...and following them from the config's visits every edit once
        state, seen = after[state], seen + 1
    assert seen == 2 * n
    assert await two_handles[0].get_team_limits("a") == state
    assert await two_handles[1].get_team_limits("a") == state


async def test_a_policy_entry_is_swapped_only_from_the_value_expected(store: BudgetStore) -> None:
    assert await store.swap_policy("rate:k", "x", "1") is None  # no entry: not written
    assert await store.get_policy() == {}
    assert await store.swap_policy("rate:k", None, "1") is None  # no entry expected: written
    assert await store.swap_policy("rate:k", None, "2") == "1"  # refused: it holds "1"
    assert await store.swap_policy("rate:k", "0", "2") == "1"
    assert await store.swap_policy("rate:k", "1", '{"é": 2}') == "1"  # written
    assert await store.get_policy() == {"rate:k": '{"é": 2}'}


async def test_concurrent_swaps_of_one_entry_lose_nothing(
    two_handles: tuple[BudgetStore, BudgetStore],
) -> None:
    """Compare-and-set through two handles at once: an edit that finds another's value
    computes again from it, so every increment counts and each replaced the one before."""
    n = 30
    replaced: list[str | None] = []

    async def increment(store: BudgetStore) -> None:
        held = (await store.get_policy()).get("count")
        while True:
            new = str(int(held or "0") + 1)
            found = await store.swap_policy("count", held, new)
            if found == held:
                replaced.append(held)
                return
            held = found

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(increment, two_handles[i % 2])
    assert (await two_handles[1].get_policy())["count"] == str(n)
    assert sorted(replaced, key=lambda v: int(v or "0")) == [None, *map(str, range(1, n))]
