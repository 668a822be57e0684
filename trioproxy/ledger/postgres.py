"""PostgreSQL ledger backend (when ``storage.database_url`` is configured).

psycopg 3 sync + ``psycopg_pool.ConnectionPool`` (autocommit) called through ``trio.to_thread``
behind a ``CapacityLimiter`` the size of the pool (the fastest combination we
measured). One batch is one transaction: ``COPY`` into a per-connection temporary
``ledger_stage`` table (``ON COMMIT DELETE ROWS``; 2-3x faster than ``unnest`` of array
parameters, measured), then one statement inserts it into ``ledger_raw`` with
``ON CONFLICT DO NOTHING`` and, in a data-modifying CTE, upserts the rollup from the
``RETURNING`` rows, so only newly inserted records are rolled up and a replayed batch never
double-counts.

Sizing: ``ledger_raw`` is partitioned by UTC day (``PARTITION BY RANGE (ts)``, one partition per
day named ``ledger_raw_pYYYYMMDD``, created ``PARTITIONS_AHEAD`` days ahead and on demand for
the days a batch touches). A raw row is ~350 bytes with its index, so 1M requests/day is
~350 MB/day; with ``retention_days = 30`` the raw table stays near 10 GB, and retention is a
``DROP TABLE`` of whole partitions (instant, no vacuum debt), unlike LiteLLM's ever-growing
spend table. ``ledger_daily`` (the rollup reports read) grows with distinct
(day, team, feature, user, route, model, cache) combinations only, e.g. 100 teams x 10 models x 1,000
users is at most 1M tiny rows per day in the worst case and typically far fewer; it is kept.
A record replayed from the spool after its day's raw partition was dropped by retention is
stored again and rolled up again; keep ``retention_days`` well above any outage length.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import psycopg
import trio
from psycopg_pool import ConnectionPool

from trioproxy.ledger import days, hourly, minutes, recent
from trioproxy.ledger.backend import (
    METRICS,
    REQUEST_TOKENS,
    ReportRow,
    RequestTotals,
    day_of,
    rollup_query,
)
from trioproxy.ledger.columns import (
    COLUMNS,
    FIELDS,
    KEY_COLUMNS,
    LEGACY_MONEY,
    NOT_NULL,
    column_ddl,
    default_sql,
    from_row,
    pg_type,
    to_row,
    upsert_tail,
)
from trioproxy.ledger.record import RecordKind, UsageRecord

POOL_SIZE = 4
"""Connections (and worker threads); 2x cores was as fast as 16 in stack.md §2."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open one connection."""
POOL_TIMEOUT = 5.0
"""Seconds to wait for a connection from the pool before the call fails."""
PARTITIONS_AHEAD = 2
"""Days of raw partitions created ahead of today."""
_LOCK_ID = 0x7472696F6C656467  # advisory lock serialising DDL across gateway processes

_ROLLUP_COLS = "day, kind, team, feature, user_name, route, model, cache"
_LEGACY_OF = {new: old for old, new in LEGACY_MONEY.items()}


def _money_upgrade(table: str, columns: tuple[str, ...]) -> str:
    """Float-USD columns of an older ledger become integer µUSD (rounded), then go."""
    sets = ", ".join(f"{c} = round({_LEGACY_OF[c]} * 1000000)::bigint" for c in columns)
    drops = ", ".join(f"DROP COLUMN {_LEGACY_OF[c]}" for c in columns)
    return f"""DO $$ BEGIN
      IF EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = '{table}'
                   AND column_name = 'cost_usd') THEN
        UPDATE {table} SET {sets};
        ALTER TABLE {table} {drops};
      END IF;
    END $$"""


_SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS ledger_raw ({column_ddl('postgres')}, "
    f"UNIQUE ({', '.join(KEY_COLUMNS)}, ts)) PARTITION BY RANGE (ts)",
    f"""CREATE TABLE IF NOT EXISTS ledger_daily (
        day date NOT NULL, kind text NOT NULL, team text NOT NULL, feature text NOT NULL,
        user_name text NOT NULL, route text NOT NULL, model text NOT NULL,
        cache text NOT NULL DEFAULT '',
        {", ".join(f"{m} bigint NOT NULL DEFAULT 0" for m in METRICS)},
        PRIMARY KEY ({_ROLLUP_COLS}))""",
    hourly.PG_DDL,
    days.PG_DDL,
    days.META_DDL.format(text="text"),
    minutes.PG_DDL,
    *recent.INDEXES,
    # a rollup made before the cache dimension: add the column ('' on old rows), widen the key
    "ALTER TABLE ledger_daily ADD COLUMN IF NOT EXISTS cache text NOT NULL DEFAULT ''",
    f"""DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                       ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                     WHERE i.indrelid = 'ledger_daily'::regclass AND i.indisprimary
                       AND a.attname = 'cache') THEN
        ALTER TABLE ledger_daily DROP CONSTRAINT ledger_daily_pkey,
          ADD PRIMARY KEY ({_ROLLUP_COLS});
      END IF;
    END $$""",
    # a ledger made before token buckets and integer µUSD: add the columns (0 on old rows)
    "ALTER TABLE ledger_daily "
    + ", ".join(f"ADD COLUMN IF NOT EXISTS {m} bigint NOT NULL DEFAULT 0" for m in METRICS),
    "ALTER TABLE ledger_raw "
    + ", ".join(
        f"ADD COLUMN IF NOT EXISTS {c} {pg_type(f)}"
        + (f" NOT NULL DEFAULT {default_sql(f)}" if f in NOT_NULL else "")
        for f, c in zip(FIELDS, COLUMNS, strict=True)
        if f != "ts"
    ),
    "ALTER TABLE ledger_hourly "
    + ", ".join(f"ADD COLUMN IF NOT EXISTS {m} bigint NOT NULL DEFAULT 0" for m in METRICS),
    _money_upgrade("ledger_daily", ("cost_micros", "saved_micros")),
    _money_upgrade("ledger_hourly", ("cost_micros", "saved_micros")),
    _money_upgrade("ledger_raw", ("cost_micros", "saved_micros")),
]


_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS ledger_stage "
    f"({column_ddl('postgres').replace('ts timestamptz', 'ts float8')}) ON COMMIT DELETE ROWS"
)
_COPY_SQL = f"COPY ledger_stage ({', '.join(COLUMNS)}) FROM STDIN"


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+/-]+")


def _day_expr(zone: str) -> str:
    """The local day number of ``hour`` in ``zone`` (an IANA name, checked: it is inlined)."""
    if not _ZONE_NAME.fullmatch(zone):
        raise ValueError(f"not a time zone name: {zone!r}")
    return f"((to_timestamp(hour * 3600) AT TIME ZONE '{zone}')::date - DATE '1970-01-01')"


def _write_sql(zone: str) -> str:
    """One statement per batch: insert the staged rows, then every roll-up from the rows
    actually inserted (the hourly rows once, in ``h``; the day rows from them)."""
    select = ", ".join(
        "to_timestamp(ts)" if f == "ts" else c for f, c in zip(FIELDS, COLUMNS, strict=True)
    )
    summed = METRICS[1:]
    return f"""
WITH ins AS (
  INSERT INTO ledger_raw ({", ".join(COLUMNS)})
  SELECT {select} FROM ledger_stage
  ON CONFLICT DO NOTHING
  RETURNING ts, kind, team, feature, user_name, route, target, provider_model, cache,
            {", ".join(summed)}, key_name, status, latency_ms, ttfb_ms, hedge_role, outcome,
            error_kind
), h AS (
  {hourly.select_sql("ins", "floor(extract(epoch FROM ts) / 3600)::bigint")}
), hr AS (
  {hourly.INSERT_HEAD} SELECT * FROM h {hourly.UPSERT_TAIL}
), dy AS (
  {days.from_hourly_sql("h", _day_expr(zone))}
), mi AS (
  {minutes.upsert_head()}
  {minutes.select_sql("ins", "floor(extract(epoch FROM ts) / 60)::bigint")}
  {minutes.upsert_tail()}
), up AS (
  INSERT INTO ledger_daily ({_ROLLUP_COLS}, {", ".join(METRICS)})
  SELECT (ts AT TIME ZONE 'UTC')::date, kind, team, feature, user_name, route,
         COALESCE(NULLIF(target, ''), provider_model, ''), cache,
         count(*), {", ".join(f"sum({m})" for m in summed)}
  FROM ins GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
  {upsert_tail("ledger_daily", _ROLLUP_COLS)}
)
SELECT count(*) FROM ins"""


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_STAGE_DDL)


def _partition(day: dt.date) -> str:
    return f"ledger_raw_p{day:%Y%m%d}"


class PostgresLedger:
    """Implements :class:`~trioproxy.ledger.backend.LedgerBackend` on PostgreSQL."""

    def __init__(self, pool: ConnectionPool, *, pool_size: int, zone: str | None = None) -> None:
        self._pool = pool
        self._zone = zone
        self.days_zone = zone or "UTC"
        """The zone ``ledger_days`` is kept in (:mod:`trioproxy.ledger.days`); known for sure
        once the schema is made (first use)."""
        self._write_sql = _write_sql(self.days_zone)
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
            configure=_configure,
        )
        await trio.to_thread.run_sync(lambda: pool.open(wait=False))
        return cls(pool, pool_size=pool_size, zone=zone)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    def _ensure(self, conn: psycopg.Connection[Any], days: set[dt.date]) -> None:
        today = dt.datetime.now(dt.UTC).date()
        want = days | {today + dt.timedelta(days=i) for i in range(PARTITIONS_AHEAD + 1)}
        missing = sorted(want - self._days)
        if self._schema_ready and not missing:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            if not self._schema_ready:
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                self._keep_days_in(conn)
            for day in missing:
                lo, hi = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition(day)} PARTITION OF ledger_raw "
                    f"FOR VALUES FROM ('{lo} 00:00+00') TO ('{hi} 00:00+00')"
                )
        self._schema_ready = True
        self._days.update(missing)

    def _keep_days_in(self, conn: psycopg.Connection[Any]) -> None:
        """Settle the day roll-up's zone; rebuild it from the hourly one if it changed."""
        meta = dict(conn.execute("SELECT name, value FROM ledger_meta").fetchall())
        stored = meta.get(days.ZONE_KEY)
        want = self._zone or stored or "UTC"
        if stored != want or meta.get(days.DIMS_KEY) != days.dims_signature():
            conn.execute("DELETE FROM ledger_days")
            conn.execute(days.HOUR_DAY_DDL.format(int="bigint") + " ON COMMIT DROP")
            hours = [int(h) for (h,) in conn.execute("SELECT DISTINCT hour FROM ledger_hourly")]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO hour_day VALUES (%s, %s)", days.hour_days(hours, want))
            conn.execute(days.REBUILD_SQL)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO ledger_meta VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    list(days.meta(want).items()),
                )
        if want != self.days_zone:
            self.days_zone = want
            self._write_sql = _write_sql(want)

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        rows = [to_row(r) for r in records]
        days = {day_of(r.ts) for r in records}

        def _write() -> int:
            with self._pool.connection() as conn:
                self._ensure(conn, days)
                with conn.transaction():
                    with conn.cursor().copy(_COPY_SQL) as copy:
                        for row in rows:
                            copy.write_row(row)
                    result = conn.execute(self._write_sql).fetchone()
                return int(result[0]) if result else 0

        return int(await self._run(_write))

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

        def _query() -> list[ReportRow]:
            with self._pool.connection() as conn:
                self._ensure(conn, set())
                rows = conn.execute(sql, params).fetchall()
            n = len(by)
            return [ReportRow.of(tuple(str(v) for v in row[:n]), row[n:]) for row in rows]

        result: list[ReportRow] = await self._run(_query)
        return result

    async def query_hours(
        self,
        *,
        by: Sequence[str],
        first_hour: int,
        end_hour: int,
        teams: Sequence[str] | None = None,
    ) -> list[hourly.HourRow]:
        if teams is not None and not teams:
            return []
        sql = hourly.query_sql(by, "%s", teams=len(teams) if teams is not None else 0)
        params = (first_hour, end_hour, *(teams or ()))

        def _query() -> list[hourly.HourRow]:
            with self._pool.connection() as conn:
                self._ensure(conn, set())
                return hourly.rows_of(conn.execute(sql, params).fetchall(), len(by))

        result: list[hourly.HourRow] = await self._run(_query)
        return result

    async def request_spend(self, *, since: float, until: float) -> list[RequestTotals]:
        sql = (
            "SELECT request_id, extract(epoch FROM ts)::float8, team, user_name, cost_micros, "
            f"({REQUEST_TOKENS})::bigint FROM ledger_raw WHERE kind = 'request' "
            "AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)"
        )

        def _query() -> list[RequestTotals]:
            with self._pool.connection() as conn:
                self._ensure(conn, set())
                rows = conn.execute(sql, (since, until)).fetchall()
            return [(str(a), float(b), str(c), str(d), int(e), int(f)) for a, b, c, d, e, f in rows]

        result: list[RequestTotals] = await self._run(_query)
        return result

    async def _ensured(self) -> None:
        def _ensure() -> None:
            with self._pool.connection() as conn:
                self._ensure(conn, set())

        await self._run(_ensure)

    async def query_days(
        self,
        *,
        dim: str,
        first: dt.date,
        last: dt.date,
        zone: str,
        teams: Sequence[str] | None = None,
        keep: Sequence[str] = days.KEEP,
        values: Sequence[str] | None = None,
    ) -> list[days.DayRow]:
        days.check_query(dim, keep)
        if (teams is not None and not teams) or (values is not None and not values):
            return []
        await self._ensured()
        if zone != self.days_zone:
            lo, hi = days.hours_of(first, last, zone)
            rows = await self.query_hours(by=days.hourly_by(dim), first_hour=lo,
                                          end_hour=hi, teams=teams)  # fmt: skip
            return days.from_hours(rows, dim, zone, first, last, keep, values)
        sql = days.query_sql("%s", teams=len(teams or ()), values=len(values or ()), keep=keep,
                             first=days.day_number(first))  # fmt: skip
        params = days.query_params(dim, first, last, teams, values)

        def _query() -> list[days.DayRow]:
            with self._pool.connection() as conn:
                return days.rows_of(conn.execute(sql, params).fetchall())

        result: list[days.DayRow] = await self._run(_query)
        return result

    async def query_minutes(self, *, first_minute: int, end_minute: int) -> list[minutes.MinuteRow]:
        sql = minutes.query_sql("%s")

        def _query() -> list[minutes.MinuteRow]:
            with self._pool.connection() as conn:
                self._ensure(conn, set())
                return minutes.rows_of(conn.execute(sql, (first_minute, end_minute)).fetchall())

        result: list[minutes.MinuteRow] = await self._run(_query)
        return result

    async def recent_requests(
        self,
        filters: recent.Filters,
        *,
        cursor: recent.Cursor | None,
        limit: int,
        since: float,
        until: float,
    ) -> tuple[list[UsageRecord], list[recent.Attempt]]:
        sql, params = recent.page_sql(
            filters, cursor=cursor, limit=limit, since=since, until=until, param="%s",
            ts_param="to_timestamp(%s)", ts_select="extract(epoch FROM ts)::float8",
        )  # fmt: skip

        def _query() -> tuple[list[UsageRecord], list[recent.Attempt]]:
            with self._pool.connection() as conn:
                self._ensure(conn, set())
                records = [from_row(r) for r in conn.execute(sql, params).fetchall()]
                if not records:
                    return records, []
                lo = min(r.ts for r in records)
                hi = max(r.ts for r in records) + recent.ATTEMPT_SPAN_S
                ids = [r.request_id for r in records]
                q = recent.attempts_sql(len(ids), param="%s", ts_param="to_timestamp(%s)")
                found = conn.execute(q, (lo, hi, *ids)).fetchall()
            return records, recent.attempts_of(found)

        result: tuple[list[UsageRecord], list[recent.Attempt]] = await self._run(_query)
        return result

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

    async def enforce_retention(self, *, now: float, retention_days: int) -> int:
        cutoff = _partition(day_of(now) - dt.timedelta(days=retention_days))
        old = [p for p in await self.partitions() if p < cutoff]

        keep_minutes = int(now // 60) - minutes.KEEP_DAYS * 1440

        def _drop() -> int:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                conn.execute("DELETE FROM ledger_minutes WHERE minute < %s", (keep_minutes,))
                for name in old:
                    conn.execute(f"DROP TABLE IF EXISTS {name}")
            self._days = {d for d in self._days if _partition(d) >= cutoff}
            return len(old)

        return int(await self._run(_drop))

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(lambda: self._pool.close(timeout=CONNECT_TIMEOUT))


__all__ = ["CONNECT_TIMEOUT", "PARTITIONS_AHEAD", "POOL_SIZE", "POOL_TIMEOUT", "PostgresLedger"]
