"""``trioproxy report`` splits the requests served from those refused or failed, by day: the
day roll-up keeps each record's outcome and error kind, on SQLite and PostgreSQL, and a ledger
made before has its day rows split by the raw rows that are still there."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
import trio

from tests.test_ledger_helpers import Target, target_for
from trioproxy.ledger.backend import METRICS, LedgerBackend, model_of
from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.postgres import PostgresLedger
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.report import report_main, spend_report
from trioproxy.ledger.sqlite import SqliteLedger

BACKENDS = ["sqlite", "postgres"]
DAY = 86_400.0
ENDS = [  # outcome, error kind, status, target
    ("served", None, 200, "gpt-small"),
    ("served", None, 200, "cache"),
    ("denied", "budget_exceeded", 429, None),
    ("denied", "rate_limited", 429, None),
    ("error", "upstream_timeout", 504, None),
    ("error", "client_disconnected", 499, "gpt-small"),
]


def requests(n: int, *, ts: float, prefix: str, seed: int) -> list[UsageRecord]:
    """``n`` requests ending every way :data:`ENDS` lists, the served and failed ones with an
    attempt record."""
    rng = random.Random(seed)
    out: list[UsageRecord] = []
    for i in range(n):
        outcome, kind, status, target = rng.choice(ENDS)
        common = dict(
            ts=ts + i, request_id=f"{prefix}-{i}", key_name="k", team=rng.choice(("red", "blue")),
            user="ann", feature="chat", route="default", status=status, error_kind=kind,
            input_tokens=0 if outcome == "denied" else rng.randint(1, 900),
            output_tokens=rng.randint(1, 300) if outcome == "served" else 0,
            cost_micros=0 if outcome == "denied" else rng.randint(1, 50_000),
        )  # fmt: skip
        out.append(UsageRecord(kind="request", target=target, outcome=outcome, **common))  # type: ignore[arg-type]
        if outcome != "denied" and target != "cache":
            won = "won" if outcome == "served" else "failed"
            out.append(UsageRecord(kind="attempt", target="gpt-small", outcome=won, **common))  # type: ignore[arg-type]
    return out


BY = ["day", "team", "feature", "user", "route", "model", "cache", "outcome", "error_kind"]


def key(r: UsageRecord, *, outcome: bool = True) -> tuple[str, ...]:
    day = dt.datetime.fromtimestamp(r.ts, dt.UTC).date().isoformat()
    split = (r.outcome, r.error_kind or "") if outcome else ("", "")
    return (day, r.team, r.feature, r.user, r.route, model_of(r), r.cache, *split)


def grouped(
    records: list[UsageRecord], kind: str, unsplit: frozenset[tuple[str, ...]] = frozenset()
) -> dict:
    """Sums per :data:`BY` of ``records`` of ``kind``; those whose key without outcome is in
    ``unsplit`` under no outcome."""
    acc: dict = defaultdict(lambda: [0] * len(METRICS))
    for r in records:
        if r.kind != kind:
            continue
        sums = acc[key(r, outcome=key(r, outcome=False) not in unsplit)]
        sums[0] += 1
        for i, m in enumerate(METRICS[1:], 1):
            sums[i] += getattr(r, m)
    return {k: tuple(v) for k, v in acc.items()}


async def report(backend: LedgerBackend, kind: str = "request") -> dict:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    rows = await spend_report(backend, by=BY, since=since, kind=kind)  # type: ignore[arg-type]
    return {r.group: tuple(getattr(r, m) for m in METRICS) for r in rows}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_report_by_day_and_outcome_tells_served_from_refused(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = target_for(kind, request, tmp_path)
    backend = await target.open()
    now = time.time()
    records = [*requests(60, ts=now - 3 * DAY, prefix="a", seed=1),
               *requests(60, ts=now - 200, prefix="b", seed=2)]  # fmt: skip
    try:
        await backend.write_batch(records)
        got = await report(backend)
        attempts = await report(backend, "attempt")
        by_outcome = await spend_report(
            backend, by=["day", "outcome"], since=dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        )
    finally:
        await backend.aclose()
    assert got == grouped(records, "request")
    assert attempts == grouped(records, "attempt")
    counts = {r.group: r.requests for r in by_outcome}
    for day in {key(r)[0] for r in records}:
        for outcome in ("served", "denied", "error"):
            want = sum(1 for r in records
                       if r.kind == "request" and key(r)[0] == day and r.outcome == outcome)  # fmt: skip
            assert counts.get((day, outcome), 0) == want > 0


SQLITE_DAILY_BEFORE = (
    """CREATE TABLE ledger_daily (
    day TEXT NOT NULL, kind TEXT NOT NULL, team TEXT NOT NULL, feature TEXT NOT NULL,
    user_name TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, cache TEXT NOT NULL, """
    + ", ".join(f"{m} INTEGER NOT NULL" for m in METRICS)
    + """,
    PRIMARY KEY (day, kind, team, feature, user_name, route, model, cache))"""
)
PG_DAILY_BEFORE = f"""CREATE TABLE ledger_daily (
        day date NOT NULL, kind text NOT NULL, team text NOT NULL, feature text NOT NULL,
        user_name text NOT NULL, route text NOT NULL, model text NOT NULL,
        cache text NOT NULL DEFAULT '',
        {", ".join(f"{m} bigint NOT NULL DEFAULT 0" for m in METRICS)},
        PRIMARY KEY (day, kind, team, feature, user_name, route, model, cache))"""
"""``ledger_daily`` as the version before outcomes made it (its DDL verbatim)."""
_OLD_KEY = "day, kind, team, feature, user_name, route, model, cache"


def _execute(target: Target, statements: list[str]) -> None:
    if target.kind == "sqlite":
        conn = sqlite3.connect(target.where, isolation_level=None)
        try:
            for stmt in statements:
                conn.execute(stmt)
        finally:
            conn.close()
    else:
        with psycopg.connect(target.where, autocommit=True) as pg:
            for stmt in statements:
                pg.execute(stmt)


def as_before(target: Target) -> list[str]:
    """The day roll-up back in the shape the version before outcomes kept, with what it held
    (the same rows summed without outcome and error kind)."""
    sums = ", ".join(f"sum({m}) AS {m}" for m in METRICS)
    ddl = SQLITE_DAILY_BEFORE if target.kind == "sqlite" else PG_DAILY_BEFORE
    return [
        f"CREATE TABLE daily_now AS SELECT {_OLD_KEY}, {sums} FROM ledger_daily "
        f"GROUP BY {_OLD_KEY}",
        "DROP TABLE ledger_daily",
        ddl,
        "INSERT INTO ledger_daily SELECT * FROM daily_now",
        "DROP TABLE daily_now",
    ]


RENAMED_KEY = {
    "sqlite": [],
    "postgres": ["ALTER TABLE ledger_daily RENAME CONSTRAINT ledger_daily_pkey TO daily_key_v1"],
}
"""A ledger whose day roll-up's key is not named ``ledger_daily_pkey`` (made by hand, or
restored) is upgraded all the same (the upgrade dropped that name: the open failed)."""


async def split_days(backend: LedgerBackend) -> int:
    """PostgreSQL splits the day rows a day at a time, in the retention rounds (the writer's
    first comes at start): run them all; how many there were."""
    rounds = 0
    if isinstance(backend, PostgresLedger):
        while (await backend.enforce_retention(now=time.time(), retention_days=None))[1]:
            rounds += 1
    return rounds


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_ledger_made_before_outcomes_has_its_day_rows_split_by_the_raw_rows_left(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Opened by this version, a ledger whose day roll-up has no outcome gains it: the day rows
    whose raw rows are all there are split by them; those whose raw rows retention removed
    (a whole day, or one row of a group) keep their totals under no outcome. Nothing is
    counted twice or lost, and what is written after rolls up by outcome."""
    target = target_for(kind, request, tmp_path)
    now = time.time()
    kept = requests(40, ts=now - 3 * DAY, prefix="kept", seed=3)
    gone = requests(20, ts=now - 5 * DAY, prefix="gone", seed=4)
    backend = await target.open()
    try:
        await backend.write_batch([*kept, *gone])
    finally:
        await backend.aclose()
    cut = kept[0]  # one raw row of a group removed: that group cannot be split
    await trio.to_thread.run_sync(_execute, target, [
        *as_before(target),
        "DELETE FROM ledger_raw WHERE request_id LIKE 'gone-%'",
        f"DELETE FROM ledger_raw WHERE request_id = '{cut.request_id}' AND kind = 'request'",
        *RENAMED_KEY[target.kind],
    ])  # fmt: skip
    unsplit = frozenset(key(r, outcome=False) for r in [*gone, cut])
    later = requests(6, ts=now - 100, prefix="later", seed=5)
    for _ in range(2):  # the second open finds the ledger current: nothing moves
        backend = await target.open()
        try:
            await split_days(backend)
            got = await report(backend)
            attempts = await report(backend, "attempt")
        finally:
            await backend.aclose()
        assert got == grouped([*kept, *gone], "request", unsplit)
        old_days = frozenset(key(r, outcome=False) for r in gone)
        assert attempts == grouped([*kept, *gone], "attempt", old_days)
    assert any(k[-2:] == ("", "") for k in got) and any(k[-2] == "denied" for k in got)
    backend = await target.open()
    try:
        await backend.write_batch(later)
        got = await report(backend)
    finally:
        await backend.aclose()
    assert got == grouped([*kept, *gone, *later], "request", unsplit)


def test_the_report_prints_served_refused_and_failed_requests_per_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    records = [*requests(30, ts=now - 2 * DAY, prefix="a", seed=6),
               *requests(30, ts=now - 300, prefix="b", seed=7)]  # fmt: skip

    async def seed() -> None:
        backend = await SqliteLedger.open(tmp_path / SQLITE_NAME)
        await backend.write_batch(records)
        await backend.aclose()

    trio.run(seed)
    argv = ["--by", "day,outcome,error_kind", "--since", "7d", "--state-dir", str(tmp_path)]
    assert report_main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["day", "outcome", "error_kind", "requests"]
    want: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        if r.kind == "request":
            sums = want[key(r)[0], r.outcome, r.error_kind or "-"]
            sums[0] += 1
            sums[1] += r.cost_micros
    lines = {tuple(line.split()[:3]): line.split() for line in out[2:-2]}
    assert set(lines) == set(want)
    for group, (n, cost) in want.items():
        assert lines[group][3] == f"{n:,}" and lines[group][9] == f"{cost / 1e6:,.6f}"
    day = dt.datetime.fromtimestamp(now - 300, dt.UTC).date().isoformat()
    assert (day, "denied", "budget_exceeded") in lines and (day, "served", "-") in lines
    assert out[-1].split()[:2] == ["TOTAL", f"{sum(n for n, _ in want.values()):,}"]


async def test_postgres_splits_the_day_rows_after_its_open_while_batches_go_on(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL: the first open of a ledger made before outcomes splits nothing (it scanned
    the whole raw table in its DDL transaction while every batch waited); the retention
    rounds split a day at a time, and rows written by outcome to those days meanwhile are
    split with them, counted once."""
    target = target_for("postgres", request, tmp_path)
    now = time.time()
    kept = requests(40, ts=now - 3 * DAY, prefix="kept", seed=3)
    backend = await target.open()
    try:
        await backend.write_batch(kept)
    finally:
        await backend.aclose()
    await trio.to_thread.run_sync(_execute, target, as_before(target))
    during = requests(30, ts=now - 3 * DAY + 100, prefix="during", seed=6)
    everything = frozenset(key(r, outcome=False) for r in kept)
    backend = await target.open()
    try:
        await backend.write_batch(during)  # the open split nothing: the old rows read '-'
        got = await report(backend)
        assert got == grouped(during, "request") | grouped(kept, "request", everything)
        assert await split_days(backend) >= 3  # a day each, from 2 days ahead
        got = await report(backend)
    finally:
        await backend.aclose()
    assert got == grouped([*kept, *during], "request")
