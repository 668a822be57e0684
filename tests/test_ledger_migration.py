"""A ledger written by the float-USD schema (main at 988c85f) opens, keeps every row, and
continues in integer µUSD with token buckets, on SQLite and on PostgreSQL.

The old tables are created with that version's DDL verbatim and filled with plain SQL, so the
test does not depend on the code under test to make the "before" state.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from trioproxy.ledger import minutes
from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.postgres import PostgresLedger
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.sqlite import SqliteLedger

_V1_COLUMNS = (
    "ts, request_id, kind, key_name, team, user_name, feature, route, end_user, chain, target, "
    "provider, provider_model, input_tokens, output_tokens, estimated, cost_usd, saved_usd, "
    "latency_ms, ttfb_ms, cache, status, error_kind, fallback_depth, attempt, hedge_role, "
    "outcome, stream"
)
SQLITE_V1 = [
    "CREATE TABLE ledger_raw (ts REAL NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL, "
    "key_name TEXT NOT NULL, team TEXT NOT NULL, user_name TEXT NOT NULL, feature TEXT NOT NULL, "
    "route TEXT NOT NULL, end_user TEXT, chain TEXT, target TEXT NOT NULL, provider TEXT, "
    "provider_model TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, "
    "estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, saved_usd REAL NOT NULL, "
    "latency_ms REAL NOT NULL, ttfb_ms REAL, cache TEXT NOT NULL, status INTEGER NOT NULL, "
    "error_kind TEXT, fallback_depth INTEGER NOT NULL, attempt INTEGER NOT NULL, hedge_role TEXT, "
    "outcome TEXT NOT NULL, stream INTEGER NOT NULL, UNIQUE (request_id, kind, attempt, target))",
    "CREATE INDEX ledger_raw_ts ON ledger_raw (ts)",
    """CREATE TABLE ledger_daily (
    day TEXT NOT NULL, kind TEXT NOT NULL, team TEXT NOT NULL, feature TEXT NOT NULL,
    user_name TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, cache TEXT NOT NULL,
    requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, saved_usd REAL NOT NULL,
    PRIMARY KEY (day, kind, team, feature, user_name, route, model, cache))""",
]
PG_V1 = [
    "CREATE TABLE ledger_raw (ts timestamptz NOT NULL, request_id text NOT NULL, "
    "kind text NOT NULL, key_name text NOT NULL, team text NOT NULL, user_name text NOT NULL, "
    "feature text NOT NULL, route text NOT NULL, end_user text, chain text, "
    "target text NOT NULL, provider text, provider_model text, input_tokens bigint NOT NULL, "
    "output_tokens bigint NOT NULL, estimated boolean NOT NULL, "
    "cost_usd double precision NOT NULL, saved_usd double precision NOT NULL, "
    "latency_ms double precision NOT NULL, ttfb_ms double precision, cache text NOT NULL, "
    "status integer NOT NULL, error_kind text, fallback_depth integer NOT NULL, "
    "attempt integer NOT NULL, hedge_role text, outcome text NOT NULL, stream boolean NOT NULL, "
    "UNIQUE (request_id, kind, attempt, target, ts)) PARTITION BY RANGE (ts)",
    """CREATE TABLE ledger_daily (
        day date NOT NULL, kind text NOT NULL, team text NOT NULL, feature text NOT NULL,
        user_name text NOT NULL, route text NOT NULL, model text NOT NULL,
        cache text NOT NULL DEFAULT '', requests bigint NOT NULL, input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        cost_usd double precision NOT NULL, saved_usd double precision NOT NULL,
        PRIMARY KEY (day, kind, team, feature, user_name, route, model, cache))""",
]

NOW = time.time()
TODAY = dt.datetime.fromtimestamp(NOW, dt.UTC).date()
# (request_id, input, output, cost_usd, saved_usd) of requests stored by the old version
OLD_ROWS = [("old-1", 1200, 300, 0.004125, 0.0), ("old-2", 10, 0, 0.0, 0.00075)]


def _old_raw_values(rid: str, inp: int, out: int, cost: float, saved: float) -> tuple:
    return (NOW, rid, "request", "k", "red", "ann", "chat", "default", None, "default", "m",
            "p", "pm", inp, out, False, cost, saved, 12.5, 3.0, "miss", 200, None, 0, 0,
            None, "served", False)  # fmt: skip


def _old_daily_values() -> tuple:
    return (TODAY.isoformat(), "request", "red", "chat", "ann", "default", "m", "miss",
            len(OLD_ROWS), sum(r[1] for r in OLD_ROWS), sum(r[2] for r in OLD_ROWS),
            sum(r[3] for r in OLD_ROWS), sum(r[4] for r in OLD_ROWS))  # fmt: skip


def _new_record() -> UsageRecord:
    return UsageRecord(
        ts=NOW, request_id="new-1", kind="request", key_name="k", team="red", user="ann",
        feature="chat", route="default", endpoint="/v1/messages/count_tokens", target="m",
        cache="miss", input_tokens=7,
        cache_read_tokens=9000, cache_write_5m_tokens=120, cache_write_1h_tokens=80,
        output_tokens=50, reasoning_tokens=20, cost_micros=3_901, cache_saved_micros=24_299,
    )  # fmt: skip


async def _check(backend: LedgerBackend) -> None:
    try:
        assert await backend.write_batch([_new_record()]) == 1
        assert await backend.write_batch([_new_record()]) == 0  # the key still dedups
        (row,) = await backend.query(
            by=["team"], since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        )
    finally:
        await backend.aclose()
    assert row.requests == 3
    assert row.input_tokens == 1210 + 7
    assert (row.cache_read_tokens, row.cache_write_5m_tokens, row.cache_write_1h_tokens) == (
        9000, 120, 80,
    )  # fmt: skip
    assert (row.output_tokens, row.reasoning_tokens) == (350, 20)
    assert row.cost_micros == 4_125 + 3_901  # old float USD became exact µUSD
    assert row.saved_micros == 750
    assert row.cache_saved_micros == 24_299


async def test_sqlite_ledger_of_the_float_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    for stmt in SQLITE_V1:
        conn.execute(stmt)
    marks = ", ".join("?" * 28)
    for r in OLD_ROWS:
        conn.execute(
            f"INSERT INTO ledger_raw ({_V1_COLUMNS}) VALUES ({marks})", _old_raw_values(*r)
        )
    conn.execute(f"INSERT INTO ledger_daily VALUES ({', '.join('?' * 13)})", _old_daily_values())
    conn.commit()
    conn.close()

    await _check(await SqliteLedger.open(path))
    await _check_raw_sqlite(path)


async def _check_raw_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(ledger_raw)")]
        rows = conn.execute(
            "SELECT request_id, cost_micros, saved_micros, cache_read_tokens, latency_ms, "
            "endpoint FROM ledger_raw ORDER BY request_id"
        ).fetchall()
    finally:
        conn.close()
    assert "cost_usd" not in cols and "saved_usd" not in cols
    # rows made before the endpoint column have none (''): it cannot be told afterwards
    assert rows == [("new-1", 3901, 0, 9000, 0.0, "/v1/messages/count_tokens"),
                    ("old-1", 4125, 0, 0, 12.5, ""), ("old-2", 0, 750, 0, 12.5, "")]  # fmt: skip


async def test_postgres_ledger_of_the_float_schema_is_migrated(pg_url: str) -> None:
    lo, hi = TODAY.isoformat(), (TODAY + dt.timedelta(days=1)).isoformat()
    with psycopg.connect(pg_url, autocommit=True) as pg:
        for stmt in PG_V1:
            pg.execute(stmt)
        pg.execute(
            f"CREATE TABLE ledger_raw_p{TODAY:%Y%m%d} PARTITION OF ledger_raw "
            f"FOR VALUES FROM ('{lo} 00:00+00') TO ('{hi} 00:00+00')"
        )
        marks = ", ".join(["to_timestamp(%s)"] + ["%s"] * 27)
        for r in OLD_ROWS:
            pg.execute(
                f"INSERT INTO ledger_raw ({_V1_COLUMNS}) VALUES ({marks})", _old_raw_values(*r)
            )
        pg.execute(
            f"INSERT INTO ledger_daily VALUES ({', '.join(['%s'] * 13)})", _old_daily_values()
        )

    await _check(await PostgresLedger.open(pg_url, pool_timeout=5.0))
    with psycopg.connect(pg_url, autocommit=True) as pg:
        cols = {
            r[0]
            for r in pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'ledger_raw'"
            ).fetchall()
        }
        rows = pg.execute(
            "SELECT request_id, cost_micros, saved_micros, cache_read_tokens, endpoint "
            "FROM ledger_raw ORDER BY request_id"
        ).fetchall()
    assert "cost_usd" not in cols and "saved_usd" not in cols
    assert rows == [("new-1", 3901, 0, 9000, "/v1/messages/count_tokens"),
                    ("old-1", 4125, 0, 0, ""), ("old-2", 0, 750, 0, "")]  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_fresh_ledger_is_already_current(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Opening twice (migration steps re-run on a current schema) changes nothing."""
    if kind == "sqlite":
        path = str(tmp_path / "ledger.sqlite3")
        await (await SqliteLedger.open(path)).aclose()
        backend: LedgerBackend = await SqliteLedger.open(path)
    else:
        url = request.getfixturevalue("pg_url")
        await (await PostgresLedger.open(url, pool_timeout=5.0)).aclose()
        backend = await PostgresLedger.open(url, pool_timeout=5.0)
    try:
        assert await backend.write_batch([_new_record()]) == 1
        (row,) = await backend.query(
            by=["team"], since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        )
    finally:
        await backend.aclose()
    assert (row.requests, row.cost_micros, row.cache_saved_micros) == (1, 3_901, 24_299)


HOURLY_FLOAT = """CREATE TABLE ledger_hourly (
    hour INTEGER NOT NULL, team TEXT NOT NULL, feature TEXT NOT NULL, user_name TEXT NOT NULL,
    key_name TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, cache TEXT NOT NULL,
    status INTEGER NOT NULL, requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, saved_usd REAL NOT NULL,
    PRIMARY KEY (hour, team, feature, user_name, key_name, route, model, cache, status))"""
"""The hourly roll-up as main briefly had it (d538237), in float USD."""


async def test_sqlite_float_hourly_rollup_is_migrated_and_old_ledgers_backfilled(
    tmp_path: Path,
) -> None:
    hour = int(NOW // 3600)
    with_hourly, without = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    for path in (with_hourly, without):
        conn = sqlite3.connect(path)
        for stmt in SQLITE_V1:
            conn.execute(stmt)
        marks = ", ".join("?" * 28)
        for r in OLD_ROWS:
            conn.execute(
                f"INSERT INTO ledger_raw ({_V1_COLUMNS}) VALUES ({marks})", _old_raw_values(*r)
            )
        if path == with_hourly:
            conn.execute(HOURLY_FLOAT)
            conn.execute(
                "INSERT INTO ledger_hourly VALUES (?, 'red', 'chat', 'ann', 'k', 'default', 'm', "
                "'miss', 200, 2, 1210, 300, 0.004125, 0.00075)",
                (hour,),
            )
        conn.commit()
        conn.close()
        backend = await SqliteLedger.open(path)
        try:
            await backend.write_batch([_new_record()])
            (row,) = await backend.query_hours(by=["team"], first_hour=hour, end_hour=hour + 1)
        finally:
            await backend.aclose()
        assert (row.requests, row.cost_micros, row.saved_micros) == (3, 4_125 + 3_901, 750)
        assert (row.cache_read_tokens, row.cache_saved_micros) == (9000, 24_299)


def _minutes_before_teams(integer: str, text: str) -> str:
    """``ledger_minutes`` as made before the team table (unchanged since: its DDL then)."""
    counts = ", ".join(f"{c} {integer} NOT NULL DEFAULT 0" for c in minutes.COUNTS)
    return (
        f"CREATE TABLE ledger_minutes (minute {integer} NOT NULL, target {text} NOT NULL, "
        f"role {text} NOT NULL, outcome {text} NOT NULL, error_kind {text} NOT NULL, {counts}, "
        "PRIMARY KEY (minute, target, role, outcome, error_kind))"
    )


OLD_MINUTE = int(NOW // 60)


def _attempt(team: str) -> UsageRecord:
    return UsageRecord(
        ts=NOW, request_id=f"r-{team}", kind="attempt", key_name="k", team=team, user="ann",
        feature="chat", route="default", target="m", hedge_role="primary", outcome="won",
        latency_ms=12.0,
    )  # fmt: skip


async def _check_minutes(backend: LedgerBackend) -> None:
    """The old counters stay every team's; the team table, new, counts from now on."""
    try:
        await backend.write_batch([_attempt("red"), _attempt("blue")])
        window = {"first_minute": OLD_MINUTE, "end_minute": OLD_MINUTE + 1}
        every = await backend.query_minutes(**window)
        red = await backend.query_minutes(**window, teams=["red"])
        both = await backend.query_minutes(**window, teams=["blue", "red"])
    finally:
        await backend.aclose()
    assert [(r.target, r.role, r.outcome, r.attempts) for r in every] == [
        ("m", "primary", "won", 7 + 2)
    ]
    assert [(r.target, r.attempts) for r in red] == [("m", 1)]
    assert [(r.target, r.attempts) for r in both] == [("m", 2)]


async def test_sqlite_ledger_made_before_the_team_minute_counters_gains_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(_minutes_before_teams("INTEGER", "TEXT") + " WITHOUT ROWID")
    conn.execute("INSERT INTO ledger_minutes (minute, target, role, outcome, error_kind, "
                 "attempts) VALUES (?, 'm', 'primary', 'won', '', 7)", (OLD_MINUTE,))  # fmt: skip
    conn.commit()
    conn.close()
    await _check_minutes(await SqliteLedger.open(path))


async def test_postgres_ledger_made_before_the_team_minute_counters_gains_them(
    pg_url: str,
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute(_minutes_before_teams("bigint", "text"))
        pg.execute("INSERT INTO ledger_minutes (minute, target, role, outcome, error_kind, "
                   "attempts) VALUES (%s, 'm', 'primary', 'won', '', 7)", (OLD_MINUTE,))  # fmt: skip
    await _check_minutes(await PostgresLedger.open(pg_url, pool_timeout=5.0))
