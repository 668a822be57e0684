"""SQLite ledger backend (the default): ``ledger.sqlite3`` in ``state_dir``.

WAL mode, ``busy_timeout`` and ``BEGIN IMMEDIATE`` make it safe with several writer processes on
one host (hypercorn workers): each batch is one short write transaction. Calls run in
``trio.to_thread`` behind a ``CapacityLimiter(1)`` (one connection, one statement at a time).

Sizing: a raw row takes ~340 bytes of the file with its indexes and roll-ups (measured: 2M rows,
a request and an attempt row each for 1M requests, 684 MB), so 1M requests a day is ~680 MB
a day; retention
deletes raw rows older than ``retention_days`` (run hourly by the writer) and keeps
``ledger_daily``, whose size is bounded by distinct (day, team, feature, user, route, model,
cache, outcome, error kind) combinations, not by traffic. Beyond a few million requests a day, configure PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from trioproxy.ledger import days, hourly, minutes, provisional, recent
from trioproxy.ledger.backend import (
    DAILY_KEY,
    METRICS,
    REQUEST_TOKENS,
    ReportRow,
    RequestTotals,
    aggregate,
    day_of,
    rollup_query,
)
from trioproxy.ledger.columns import (
    COLUMNS,
    KEY_COLUMNS,
    column_ddl,
    from_row,
    made_up,
    to_row,
    upsert_tail,
)
from trioproxy.ledger.reads import RollupReads
from trioproxy.ledger.record import RecordKind, UsageRecord
from trioproxy.ledger.sqlite_migrate import DAILY_DDL, migrate
from trioproxy.store.sqlite_file import SCHEMA_WAIT_S, immediate, open_wal, set_busy_timeout

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's write lock before failing the batch."""

_INSERT = (
    f"INSERT OR IGNORE INTO ledger_raw ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)
_UPSERT = (
    f"INSERT INTO ledger_daily ({DAILY_KEY}, {', '.join(METRICS)}) "
    f"VALUES ({', '.join('?' * (10 + len(METRICS)))}) {upsert_tail('ledger_daily', DAILY_KEY)}"
)


RETENTION_BATCH = 5_000
"""Most raw rows one retention call removes. A day's rows in one statement held the write
lock throughout (411k rows of a 1M-row ledger: 1.43 s, and 128 MB of WAL left), while this
worker's writer waited and other workers' batches ran into ``busy_timeout``; in calls of
this many, the same day took 83 calls of 16 ms on average, the longest 31 ms, and left
5.2 MB of WAL (``loadtest/ledger_growth.py --stores retention``)."""
_DELETE_OLD = (
    "DELETE FROM ledger_raw WHERE rowid IN (SELECT rowid FROM ledger_raw WHERE ts < ? LIMIT ?)"
)


def _schema() -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS ledger_raw ({column_ddl('sqlite')}, "
        f"UNIQUE ({', '.join(KEY_COLUMNS)}))",
        "CREATE INDEX IF NOT EXISTS ledger_raw_ts ON ledger_raw (ts)",
        *recent.INDEXES,
        provisional.INDEX,
        DAILY_DDL.format(name="ledger_daily"),
    ]


_BACKFILL_HOURLY = (
    f"{hourly.INSERT_HEAD} {hourly.select_sql('ledger_raw', 'CAST(ts / 3600 AS INTEGER)')} "
    f"{hourly.UPSERT_TAIL}"
)
_UPSERT_HOURLY = hourly.upsert_sql("?")
_UPSERT_DAYS = days.upsert_sql("?")
_UPSERT_MINUTES = minutes.upsert_sql("?")
_UPSERT_TEAM_MINUTES = minutes.upsert_sql("?", per_team=True)
_PROVISIONAL = provisional.lookup_sql("IN", extra=", rowid")


def _add_hourly(conn: sqlite3.Connection) -> None:
    """Create the hourly roll-up; a ledger made before it gets it from its raw rows (once)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_hourly'"
    ).fetchone()
    conn.execute(hourly.SQLITE_DDL)
    if not exists:
        conn.execute(_BACKFILL_HOURLY)


def _days_zone(conn: sqlite3.Connection, zone: str | None) -> str:
    """The zone ``ledger_days`` is kept in: ``zone`` when given (rebuilding the table from the
    hourly roll-up when it was kept in another, with other dimensions, or is new), else the
    stored one (UTC if none)."""
    conn.execute(days.META_DDL.format(text="TEXT"))
    meta = dict(conn.execute("SELECT name, value FROM ledger_meta").fetchall())
    stored = meta.get(days.ZONE_KEY)
    want = zone or stored or "UTC"
    conn.execute(days.SQLITE_DDL)
    if stored != want or meta.get(days.DIMS_KEY) != days.dims_signature():
        conn.execute("DROP TABLE ledger_days")  # made again in the current shape
        conn.execute(days.SQLITE_DDL)
        conn.execute(days.HOUR_DAY_DDL.format(int="INTEGER"))
        hours = [int(h) for (h,) in conn.execute("SELECT DISTINCT hour FROM ledger_hourly")]
        conn.executemany("INSERT INTO hour_day VALUES (?, ?)", days.hour_days(hours, want))
        conn.execute(days.REBUILD_SQL)
        conn.execute("DROP TABLE temp.hour_day")
        conn.executemany(
            "INSERT INTO ledger_meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = ?",
            [(k, v, v) for k, v in days.meta(want).items()],
        )
    return want


class SqliteLedger(RollupReads):
    """Implements :class:`~trioproxy.ledger.backend.LedgerBackend` on one SQLite file."""

    PARAM = "?"
    TS_PARAM = "?"
    TS_SELECT = "ts"

    def __init__(self, conn: sqlite3.Connection, zone: str = "UTC") -> None:
        self._conn = conn
        self._limiter = trio.CapacityLimiter(1)
        self.days_zone = zone
        """The zone ``ledger_days`` is kept in (:mod:`trioproxy.ledger.days`)."""

    @classmethod
    async def open(cls, path: str | Path, *, zone: str | None = None) -> SqliteLedger:
        """Open (creating the file, directory and schema if needed). ``zone``: keep the day
        roll-up in this time zone (the gateway's ``budgets.timezone``); None keeps the
        stored one (a reader such as the CLI)."""

        def _open() -> tuple[sqlite3.Connection, str]:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = open_wal(str(path), busy_timeout_s=SCHEMA_WAIT_S)
            with immediate(conn):
                migrate(conn)
                for stmt in _schema():
                    conn.execute(stmt)
                _add_hourly(conn)
                kept = _days_zone(conn, zone)
                conn.execute(minutes.SQLITE_DDL)
                conn.execute(minutes.SQLITE_TEAMS_DDL)
            set_busy_timeout(conn, BUSY_TIMEOUT_MS / 1000)
            return conn, kept

        conn, kept = await trio.to_thread.run_sync(_open)
        return cls(conn, kept)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(fn, self._conn, limiter=self._limiter)

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        return await trio.to_thread.run_sync(
            self._write, list(records), limiter=self._limiter, abandon_on_cancel=True
        )

    def _write(self, records: list[UsageRecord]) -> int:
        conn = self._conn
        try:
            todo = self._begin(records)
            rows = [to_row(r) for r in todo]
            before = conn.total_changes
            conn.executemany(_INSERT, rows)
            inserted = todo
            if conn.total_changes - before != len(rows):
                # some keys were already stored (a replay): redo row by row to roll up only
                # the new ones
                conn.execute("ROLLBACK")
                todo = self._begin(records)
                inserted = [r for r in todo if conn.execute(_INSERT, to_row(r)).rowcount == 1]
            conn.executemany(_UPSERT, [(*k, *v) for k, v in aggregate(inserted).items()])
            hours = hourly.aggregate(inserted)
            conn.executemany(_UPSERT_HOURLY, hours)
            conn.executemany(_UPSERT_DAYS, days.from_hour_aggregate(hours, self.days_zone))
            conn.executemany(_UPSERT_MINUTES, minutes.aggregate(inserted))
            conn.executemany(_UPSERT_TEAM_MINUTES, minutes.aggregate(inserted, per_team=True))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(inserted)

    def _begin(self, records: list[UsageRecord]) -> Sequence[UsageRecord]:
        """Open the batch's transaction; return what to insert, the real rows having taken
        the place of the made-up ones (:mod:`~trioproxy.ledger.provisional`)."""
        self._conn.execute("BEGIN IMMEDIATE")
        todo = provisional.in_batch(records)
        if any(made_up(r) for r in todo):  # (recovery only) not beside its own row
            todo = self._without_made_up_duplicates(todo)
        self._give_way(todo)
        return todo

    def _stored(self, sql: str, ids: list[str]) -> list[tuple[Any, ...]]:
        """``sql`` ending in ``request_id IN``, run for ``ids`` (in chunks: SQLite's bound on
        parameters)."""
        return [
            row
            for at in range(0, len(ids), 500)
            for row in self._conn.execute(
                f"{sql} ({', '.join('?' * len(ids[at : at + 500]))})", ids[at : at + 500]
            )
        ]

    def _without_made_up_duplicates(self, records: Sequence[UsageRecord]) -> list[UsageRecord]:
        ids = list({r.request_id for r in records if made_up(r)})
        sql = "SELECT request_id FROM ledger_raw WHERE kind = 'request' AND request_id IN"
        stored = {row[0] for row in self._stored(sql, ids)}
        return [r for r in records if not (made_up(r) and r.request_id in stored)]

    def _give_way(self, records: Sequence[UsageRecord]) -> None:
        """Delete the stored made-up rows a real row of ``records`` replaces, and take them
        off the roll-ups."""
        ids = provisional.real_ids(records)
        stored = self._stored(_PROVISIONAL, ids) if ids else []
        if not stored:
            return
        rowids = {from_row(row[:-1]): row[-1] for row in stored}
        gone = provisional.replaced(rowids, records)
        if not gone:
            return
        self._conn.executemany("DELETE FROM ledger_raw WHERE rowid = ?",
                               [(rowids[r],) for r in gone])  # fmt: skip
        for sql, params in provisional.undo(gone, zone=self.days_zone, placeholder="?"):
            self._conn.executemany(sql, params)

    async def query(
        self,
        *,
        by: Sequence[str],
        since: dt.datetime,
        until: dt.datetime | None = None,
        kind: RecordKind = "request",
    ) -> list[ReportRow]:
        sql = rollup_query(by, "?")
        hi = (until or dt.datetime.now(dt.UTC)).timestamp()
        params = (kind, day_of(since.timestamp()).isoformat(), day_of(hi).isoformat())

        def _query() -> list[ReportRow]:
            rows = self._conn.execute(sql, params).fetchall()
            n = len(by)
            return [ReportRow.of(tuple(str(v) for v in row[:n]), row[n:]) for row in rows]

        return await trio.to_thread.run_sync(_query, limiter=self._limiter)

    async def enforce_retention(
        self, *, now: float, retention_days: int | None
    ) -> tuple[int, bool]:
        """At most :data:`RETENTION_BATCH` raw rows a call, each call its own transaction."""
        keep_minutes = int(now // 60) - minutes.KEEP_DAYS * 1440

        def _delete() -> int:
            for table in minutes.TABLES:
                self._conn.execute(f"DELETE FROM {table} WHERE minute < ?", (keep_minutes,))
            if retention_days is None:
                return 0
            cutoff = dt.datetime.combine(
                day_of(now) - dt.timedelta(days=retention_days), dt.time(), tzinfo=dt.UTC
            ).timestamp()
            return int(self._conn.execute(_DELETE_OLD, (cutoff, RETENTION_BATCH)).rowcount)

        removed = await trio.to_thread.run_sync(_delete, limiter=self._limiter)
        return removed, removed >= RETENTION_BATCH

    async def request_spend(self, *, since: float, until: float) -> list[RequestTotals]:
        sql = (
            f"SELECT request_id, ts, team, user_name, cost_micros, {REQUEST_TOKENS} "
            "FROM ledger_raw WHERE kind = 'request' AND ts >= ? AND ts < ?"
        )

        def _query() -> list[RequestTotals]:
            rows = self._conn.execute(sql, (since, until)).fetchall()
            return [(str(a), float(b), str(c), str(d), int(e), int(f)) for a, b, c, d, e, f in rows]

        return await trio.to_thread.run_sync(_query, limiter=self._limiter)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._conn.close, limiter=self._limiter)


__all__ = ["BUSY_TIMEOUT_MS", "RETENTION_BATCH", "SqliteLedger"]
