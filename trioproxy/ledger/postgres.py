"""PostgreSQL ledger backend (when ``storage.database_url`` is configured).

psycopg 3 sync + ``psycopg_pool.ConnectionPool`` (autocommit) called through ``trio.to_thread``
behind a ``CapacityLimiter`` the size of the pool (the fastest combination we
measured). One batch is one transaction: ``COPY`` into a per-connection temporary
``ledger_stage`` table (``ON COMMIT DELETE ROWS``; 2-3x faster than ``unnest`` of array
parameters, measured), then the made-up rows its real ones replace are taken out
(:mod:`~trioproxy.ledger.provisional`: one look-up of the batch's request ids in an index,
and rarely more), then
one statement inserts it into ``ledger_raw`` with
``ON CONFLICT DO NOTHING`` and, in a data-modifying CTE, upserts the rollup from the
``RETURNING`` rows, so only newly inserted records are rolled up and a replayed batch never
double-counts.

Sizing: ``ledger_raw`` is partitioned by UTC day (``PARTITION BY RANGE (ts)``, one partition per
day named ``ledger_raw_pYYYYMMDD``, created ``PARTITIONS_AHEAD`` days ahead and on demand for
the days a batch touches). A raw row is ~350 bytes with its index, so 1M requests/day is
~350 MB/day; with ``retention_days = 30`` the raw table stays near 10 GB, and retention is a
``DROP TABLE`` of whole partitions (instant, no vacuum debt), unlike LiteLLM's ever-growing
spend table. ``ledger_daily`` (the rollup reports read) grows with distinct
(day, team, feature, user, route, model, cache, outcome, error kind) combinations only (a
request's outcome and error kind are few: served requests all share one), e.g. 100 teams x
10 models x 1,000 users is at most 1M tiny rows per day of served requests in the worst case
and typically far fewer; it is kept.
A record replayed from the spool after its day's raw partition was dropped by retention is
stored again and rolled up again; keep ``retention_days`` well above any outage length.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import trio
from psycopg_pool import ConnectionPool

from trioproxy.ledger import minutes, provisional
from trioproxy.ledger import postgres_schema as schema
from trioproxy.ledger.backend import (
    REQUEST_TOKENS,
    ReportRow,
    RequestTotals,
    day_of,
    rollup_query,
)
from trioproxy.ledger.columns import COLUMNS, from_row, to_row
from trioproxy.ledger.postgres_schema import PARTITIONS_AHEAD
from trioproxy.ledger.reads import RollupReads
from trioproxy.ledger.record import RecordKind, UsageRecord

T = TypeVar("T")
POOL_SIZE = 4
"""Connections (and worker threads); 2x cores was as fast as 16 in stack.md §2."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open one connection."""
POOL_TIMEOUT = 5.0
"""Seconds to wait for a connection from the pool before the call fails."""

RETRIES = 2
"""Times a batch is written again at once when PostgreSQL rolled it back for a deadlock or a
serialization failure (rare: each table's rows are locked in key order, :func:`~trioproxy.
ledger.postgres_schema.write_sql`, but a batch that replaces made-up rows takes roll-up
rows twice); a batch that fails anyway is spooled and the database marked down."""
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

_TS_SELECT = "extract(epoch FROM ts)::float8"
_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(%s)"
_LOCK_ALONE = "SELECT pg_advisory_xact_lock(%s)"
"""A batch takes :data:`~trioproxy.ledger.postgres_schema.LOCK_MADE_UP` shared, or alone when
it holds a provisional row: that one then sees every real row committed before it, and a
real row's batch sees the provisional rows committed before it (of a real row and its made-up
one written at the same time, the later finds the earlier). A batch that finds made-up rows
to replace rolls back and starts again alone: taking them off the roll-ups locks roll-up
rows before its write statement locks others, and beside other batches that order
deadlocked (3 writers, one replacing rows: a deadlock, 1 s lost, in most of its batches)."""
_RETURNED = ", ".join(
    "extract(epoch FROM r.ts)::float8" if c == "ts" else f"r.{c}" for c in COLUMNS
)
_TAKE = (
    "WITH k AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], "
    "%s::timestamptz[]) AS k (request_id, kind, attempt, target, ts)), "
    "forgot AS (DELETE FROM ledger_provisional p USING k WHERE p.request_id = k.request_id "
    "AND p.kind = k.kind AND p.attempt = k.attempt AND p.target = k.target AND p.ts = k.ts) "
    "DELETE FROM ledger_raw r USING k WHERE r.request_id = k.request_id AND r.kind = k.kind "
    "AND r.attempt = k.attempt AND r.target = k.target AND r.ts = k.ts "
    f"AND {provisional.where_sql('r')} RETURNING {_RETURNED}"
)
"""Delete the made-up rows of some keys (one array per key column) and their entries in the
list, in one statement, returning the rows deleted (a row another batch deleted meanwhile is
not returned). It was two statements per row: 0.6 s for a batch replacing 500 on localhost,
past the write bound at a 10 ms round trip."""


class PostgresLedger(RollupReads):
    """Implements :class:`~trioproxy.ledger.backend.LedgerBackend` on PostgreSQL."""

    PARAM = "%s"
    TS_PARAM = "to_timestamp(%s)"
    TS_SELECT = _TS_SELECT

    def __init__(self, pool: ConnectionPool, *, pool_size: int, zone: str | None = None) -> None:
        self._pool = pool
        self._zone = zone
        self.days_zone = zone or "UTC"
        """The zone ``ledger_days`` is kept in (:mod:`trioproxy.ledger.days`); known for sure
        once the schema is made (first use)."""
        self._write_sql = schema.write_sql(self.days_zone)
        self._limiter = trio.CapacityLimiter(pool_size)
        self._schema_ready = False
        self._days: set[dt.date] = set()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT,
        zone: str | None = None,
    ) -> PostgresLedger:
        """Create the pool without waiting for the server: the schema is made on first use,
        so the gateway starts (and spools) while the database is down. ``zone``: keep the
        day roll-up in this time zone (None: the stored one)."""
        pool: ConnectionPool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=pool_timeout,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)},
            check=ConnectionPool.check_connection,
            configure=schema.configure,
        )
        await trio.to_thread.run_sync(lambda: pool.open(wait=False))
        return cls(pool, pool_size=pool_size, zone=zone)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    async def _read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn`` on a pooled connection in a worker thread, the schema made first."""

        def op() -> T:
            with self._pool.connection() as conn:
                self._ensure(conn, set())
                return fn(conn)

        result: T = await self._run(op)
        return result

    async def _days_zone_known(self) -> None:
        if not self._schema_ready:  # the day roll-up's zone is known once the schema is made
            await self._read(lambda conn: None)

    def _ensure(self, conn: psycopg.Connection[Any], days: set[dt.date]) -> None:
        today = dt.datetime.now(dt.UTC).date()
        want = days | {today + dt.timedelta(days=i) for i in range(PARTITIONS_AHEAD + 1)}
        missing = sorted(want - self._days)
        if self._schema_ready and not missing:
            return
        zone = schema.ensure(conn, make_schema=not self._schema_ready, missing=missing,
                             zone=self._zone)  # fmt: skip
        if zone is not None and zone != self.days_zone:
            self.days_zone = zone
            self._write_sql = schema.write_sql(zone)
        self._schema_ready = True
        self._days.update(missing)

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        records = provisional.in_batch(records)
        rows = [to_row(r) for r in records]
        days = {day_of(r.ts) for r in records}
        holds_provisional = any(provisional.provisional(r) for r in records)
        ids = provisional.real_ids(records)

        def _once(conn: psycopg.Connection[Any], alone: bool) -> int | None:
            """The batch in one transaction; None (rolled back) when it replaces made-up
            rows but holds the lock shared."""
            written: int | None = None
            with conn.transaction():
                conn.execute(_LOCK_ALONE if alone else _LOCK_SHARED, (schema.LOCK_MADE_UP,))
                keys = self._replaced(conn, ids, records)
                if keys and not alone:
                    raise psycopg.Rollback()
                with conn.cursor().copy(schema.COPY_SQL) as copy:
                    for row in rows:
                        copy.write_row(row)
                if keys:
                    self._give_way(conn, keys)
                result = conn.execute(self._write_sql).fetchone()
                written = int(result[0]) if result else 0
            return written

        def _write() -> int:
            with self._pool.connection() as conn:
                self._ensure(conn, days)
                for retry in range(RETRIES + 1):
                    try:
                        written = _once(conn, holds_provisional)
                        if written is None:  # it replaces made-up rows: alone, see _LOCK_ALONE
                            written = _once(conn, True)
                        return written or 0
                    except _TRANSIENT:  # rolled back whole: the batch again, at once
                        if retry == RETRIES:
                            raise
                raise AssertionError("unreachable")

        return int(await self._run(_write))

    @staticmethod
    def _replaced(
        conn: psycopg.Connection[Any], ids: list[str], records: Sequence[UsageRecord]
    ) -> list[tuple[object, ...]]:
        """The list's entries of the made-up rows a real row of ``records`` replaces (``ids``:
        their requests): one probe of its primary key."""
        if not ids:
            return []
        entries = conn.execute(provisional.REGISTRY_LOOKUP, (ids,)).fetchall()
        return provisional.registered(entries, records)

    def _give_way(self, conn: psycopg.Connection[Any], keys: list[tuple[object, ...]]) -> None:
        """Delete the stored made-up rows of ``keys`` (:meth:`_replaced`), and take them off
        the roll-ups (:mod:`~trioproxy.ledger.provisional`). Another batch may have
        replaced one meanwhile: only the rows this one deleted are taken off."""
        columns = [list(c) for c in zip(*keys, strict=True)]
        gone = [from_row(row) for row in conn.execute(_TAKE, columns).fetchall()]
        if not gone:
            return
        with conn.pipeline(), conn.cursor() as cur:  # one round trip for every statement
            for sql, params in provisional.undo(
                gone, zone=self.days_zone, placeholder="%s", day=dt.date.fromisoformat
            ):
                cur.executemany(sql, params)

    async def query(
        self,
        *,
        by: Sequence[str],
        since: dt.datetime,
        until: dt.datetime | None = None,
        kind: RecordKind = "request",
    ) -> list[ReportRow]:
        sql = rollup_query(by, "%s")
        hi = (until or dt.datetime.now(dt.UTC)).timestamp()
        params = (kind, day_of(since.timestamp()), day_of(hi))

        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        n = len(by)
        return [ReportRow.of(tuple(str(v) for v in row[:n]), row[n:]) for row in rows]

    async def request_spend(self, *, since: float, until: float) -> list[RequestTotals]:
        sql = (
            "SELECT request_id, extract(epoch FROM ts)::float8, team, user_name, cost_micros, "
            f"({REQUEST_TOKENS})::bigint FROM ledger_raw WHERE kind = 'request' "
            "AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)"
        )

        rows = await self._read(lambda conn: conn.execute(sql, (since, until)).fetchall())
        return [(str(a), float(b), str(c), str(d), int(e), int(f)) for a, b, c, d, e, f in rows]

    async def partitions(self) -> list[str]:
        """Names of the raw partitions, oldest first."""

        def _list() -> list[str]:
            with self._pool.connection() as conn:
                rows = conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'ledger_raw' "
                    "ORDER BY c.relname"
                ).fetchall()
            return [str(r[0]) for r in rows]

        result: list[str] = await self._run(_list)
        return result

    async def enforce_retention(
        self, *, now: float, retention_days: int | None
    ) -> tuple[int, bool]:
        cutoff = None
        kept_from: dt.datetime | None = None
        old: list[str] = []
        if retention_days is not None:
            first = day_of(now) - dt.timedelta(days=retention_days)
            cutoff = schema.partition(first)
            old = [p for p in await self.partitions() if p < cutoff]
            kept_from = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)

        keep_minutes = int(now // 60) - minutes.KEEP_DAYS * 1440
        listed_from = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(
            days=provisional.KEEP_DAYS
        )  # a real row later than this cannot replace its made-up row (provisional.KEEP_DAYS)
        if kept_from is not None:
            listed_from = max(listed_from, kept_from)

        def _drop() -> tuple[int, bool]:
            with self._pool.connection() as conn:
                self._ensure(conn, set())  # (a ledger made before ledger_provisional)
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK_ID,))
                    for table in minutes.TABLES:
                        conn.execute(f"DELETE FROM {table} WHERE minute < %s", (keep_minutes,))
                    for name in old:
                        conn.execute(f"DROP TABLE IF EXISTS {name}")
                    conn.execute("DELETE FROM ledger_provisional WHERE ts < %s", (listed_from,))
                more = schema.backfill_step(conn, listed_from.date())
                more = schema.split_step(conn) or more
            if cutoff is not None:
                self._days = {d for d in self._days if schema.partition(d) >= cutoff}
            return len(old), more

        dropped, more = await self._run(_drop)
        return int(dropped), bool(more)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(lambda: self._pool.close(timeout=CONNECT_TIMEOUT))


__all__ = ["CONNECT_TIMEOUT", "PARTITIONS_AHEAD", "POOL_SIZE", "POOL_TIMEOUT", "PostgresLedger"]
