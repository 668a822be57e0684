"""The PostgreSQL ledger's schema and its one write statement.

The DDL (made once per process under an advisory lock, with the upgrades of older ledgers:
the cache dimension, token buckets, float USD to integer µUSD, the list of provisional rows,
the day roll-up's outcomes), the day partitions of
``ledger_raw``, the day roll-up's zone (rebuilt from the hourly one when it changes), and the
statement that stores a staged batch and every roll-up from the rows it actually inserted.
:mod:`trioproxy.ledger.postgres` owns the pool and the reads.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import psycopg

from trioproxy.ledger import daily_outcomes, days, hourly, minutes, provisional, recent
from trioproxy.ledger.backend import DAILY_KEY, METRICS
from trioproxy.ledger.columns import (
    COLUMNS,
    FIELDS,
    KEY_COLUMNS,
    LEGACY_MONEY,
    NOT_NULL,
    column_ddl,
    default_sql,
    pg_type,
    upsert_tail,
)

PARTITIONS_AHEAD = 2
"""Days of raw partitions created ahead of today."""
LOCK_ID = 0x7472696F6C656467  # advisory lock serialising DDL across gateway processes
LOCK_MADE_UP = LOCK_ID + 1
"""Advisory lock a batch holding a provisional row takes alone, others shared
(:mod:`trioproxy.ledger.postgres`)."""

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
        cache text NOT NULL DEFAULT '', outcome text NOT NULL DEFAULT '',
        error_kind text NOT NULL DEFAULT '',
        {", ".join(f"{m} bigint NOT NULL DEFAULT 0" for m in METRICS)},
        PRIMARY KEY ({DAILY_KEY}))""",
    hourly.PG_DDL,
    days.PG_DDL,
    days.META_DDL.format(text="text"),
    minutes.PG_DDL,
    minutes.PG_TEAMS_DDL,
    provisional.REGISTRY_DDL,
    *recent.INDEXES,
    # a rollup made before the cache, outcome and error kind dimensions: add the columns (''
    # on old rows: the outcomes are split by the raw rows after, daily_outcomes.py), widen
    # the key
    "ALTER TABLE ledger_daily ADD COLUMN IF NOT EXISTS cache text NOT NULL DEFAULT '', "
    "ADD COLUMN IF NOT EXISTS outcome text NOT NULL DEFAULT '', "
    "ADD COLUMN IF NOT EXISTS error_kind text NOT NULL DEFAULT ''",
    # (whatever the key's name: a ledger made by hand, or restored, may name it otherwise)
    f"""DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                       ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                     WHERE i.indrelid = 'ledger_daily'::regclass AND i.indisprimary
                       AND a.attname = 'error_kind') THEN
        EXECUTE format('ALTER TABLE ledger_daily DROP CONSTRAINT %I, ADD PRIMARY KEY ({DAILY_KEY})',
          (SELECT conname FROM pg_constraint WHERE conrelid = 'ledger_daily'::regclass
             AND contype = 'p'));
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


STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS ledger_stage "
    f"({column_ddl('postgres').replace('ts timestamptz', 'ts float8')}) ON COMMIT DELETE ROWS"
)
COPY_SQL = f"COPY ledger_stage ({', '.join(COLUMNS)}) FROM STDIN"


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+/-]+")


def _day_expr(zone: str) -> str:
    """The local day number of ``hour`` in ``zone`` (an IANA name, checked: it is inlined)."""
    if not _ZONE_NAME.fullmatch(zone):
        raise ValueError(f"not a time zone name: {zone!r}")
    return f"((to_timestamp(hour * 3600) AT TIME ZONE '{zone}')::date - DATE '1970-01-01')"


_MINUTE = "floor(extract(epoch FROM ts) / 60)::bigint"


BACKFILL_KEY = "provisional_backfill_day"
"""``ledger_meta``'s name of the next UTC day (ISO) whose provisional rows are still to be
listed in ``ledger_provisional`` (a ledger made before the list), walking back to
:data:`~trioproxy.ledger.provisional.KEEP_DAYS` days ago (:func:`backfill_step`)."""
_BACKFILL_DAY = (
    f"INSERT INTO ledger_provisional SELECT {provisional.REGISTRY_KEY} FROM ledger_raw "
    f"WHERE ts >= %s AND ts < %s AND {provisional.where_sql()} ON CONFLICT DO NOTHING"
)


SPLIT_KEY = "daily_split_days"
"""``ledger_meta``'s name of the day rows without outcome still to split (a ledger made before
the day roll-up kept outcomes): ``<next day>/<first day>``, ISO, walking back
(:func:`split_step`)."""


def _marker(conn: psycopg.Connection[Any], name: str) -> str | None:
    """A ``ledger_meta`` marker's value, its row locked to the transaction's end (two processes
    walking the same days take turns); None when there is none (nothing left to do)."""
    row = conn.execute(
        "SELECT value FROM ledger_meta WHERE name = %s FOR UPDATE", (name,)
    ).fetchone()
    return None if row is None else str(row[0])


def split_step(conn: psycopg.Connection[Any]) -> bool:
    """Split the day rows of one more day by outcome (:func:`~trioproxy.ledger.daily_outcomes.
    day_split_sql`), in its own transaction: the day partition's scan first, then, holding
    :data:`LOCK_MADE_UP` alone (no batch adds to the day meanwhile), the comparison and the
    rows replaced (milliseconds). A group a batch changed between the scan and the lock no
    longer matches its day rows and stays unsplit. Returns whether days are left. Two
    processes at once take turns (the marker's row lock)."""
    with conn.transaction():
        if (marker := _marker(conn, SPLIT_KEY)) is None:
            return False
        nxt, _, first = marker.partition("/")
        day = dt.date.fromisoformat(nxt)
        if day < dt.date.fromisoformat(first):
            conn.execute("DELETE FROM ledger_meta WHERE name = %s", (SPLIT_KEY,))
            return False
        lo = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        params = {"lo": lo, "hi": lo + dt.timedelta(days=1), "day": day}
        scan, *rest = daily_outcomes.day_split_sql()
        conn.execute(scan, params)  # before the lock: batches go on meanwhile
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MADE_UP,))
        for stmt in rest:
            conn.execute(stmt, params if "%(" in stmt else None)
        conn.execute(
            "UPDATE ledger_meta SET value = %s WHERE name = %s",
            (f"{(day - dt.timedelta(days=1)).isoformat()}/{first}", SPLIT_KEY),
        )
    return True


def backfill_step(conn: psycopg.Connection[Any], first: dt.date) -> bool:
    """List the provisional rows of one more day of a ledger made before the list (one day
    partition's scan, its own transaction, not under the DDL lock: at start-up it was one
    scan of the whole raw table under it, 2.1 s per 1,000,000 rows, measured, while every
    batch waited); days before ``first`` are not listed (their made-up rows are past
    :data:`~trioproxy.ledger.provisional.KEEP_DAYS`). Returns whether days are left. Two
    processes at once take turns (the marker's row lock)."""
    with conn.transaction():
        if (marker := _marker(conn, BACKFILL_KEY)) is None:
            return False
        day = dt.date.fromisoformat(marker)
        if day < first:
            conn.execute("DELETE FROM ledger_meta WHERE name = %s", (BACKFILL_KEY,))
            return False
        lo = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        conn.execute(_BACKFILL_DAY, (lo, lo + dt.timedelta(days=1)))
        conn.execute(
            "UPDATE ledger_meta SET value = %s WHERE name = %s",
            ((day - dt.timedelta(days=1)).isoformat(), BACKFILL_KEY),
        )
    return True


_BEFORE = """SELECT to_regclass('ledger_provisional'),
  to_regclass('ledger_daily') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
      AND table_name = 'ledger_daily' AND column_name = 'outcome'),
  to_regclass('ledger_raw')"""
"""What the schema lacks before it is made: the list of provisional rows (backfilled after,
:func:`backfill_step`) and the day roll-up's outcomes (split once made); and whether there
are raw rows at all."""


_MADE_UP = "s.kind = 'request' AND s.status = 0 AND s.target = '' AND s.outcome = 'interrupted'"
"""A request row recovery made up from a dead process's intents (:func:`~trioproxy.ledger.
journal.resolve_lines`): left out when the request's own row is stored (see
:func:`~trioproxy.ledger.columns.made_up`; the other order: :mod:`~trioproxy.ledger.
provisional`)."""


def _ordered(n: int) -> str:
    """Rows in the order of their first ``n`` columns (a table's key)."""
    return f"ORDER BY {', '.join(str(i) for i in range(1, n + 1))}"


def write_sql(zone: str) -> str:
    """One statement per batch: insert the staged rows, then every roll-up from the rows
    actually inserted (the hourly rows once, in ``h``; the day rows from them). Each table's
    rows go in key order, so that concurrent batches lock the rows they share in one order
    (in hash order, three writers deadlocked on ``ledger_daily`` and ``ledger_days``: 12 of
    ~190 batches in 20 s, measured)."""
    select = ", ".join(
        "to_timestamp(ts)" if f == "ts" else c for f, c in zip(FIELDS, COLUMNS, strict=True)
    )
    summed = METRICS[1:]
    return f"""
WITH ins AS (
  INSERT INTO ledger_raw ({", ".join(COLUMNS)})
  SELECT {select} FROM ledger_stage s WHERE NOT ({_MADE_UP} AND EXISTS (
    SELECT 1 FROM ledger_raw r WHERE r.request_id = s.request_id AND r.kind = 'request'))
  ORDER BY {", ".join(f"s.{k}" for k in KEY_COLUMNS)}, s.ts
  ON CONFLICT DO NOTHING
  RETURNING ts, kind, team, feature, user_name, route, target, provider_model, cache,
            {", ".join(summed)}, key_name, status, latency_ms, ttfb_ms, hedge_role, outcome,
            error_kind, request_id, attempt
), pv AS (
  INSERT INTO ledger_provisional SELECT {provisional.REGISTRY_KEY} FROM ins
  WHERE {provisional.where_sql()} {_ordered(5)} ON CONFLICT DO NOTHING
), h AS (
  {hourly.select_sql("ins", "floor(extract(epoch FROM ts) / 3600)::bigint")}
), hr AS (
  {hourly.INSERT_HEAD} SELECT * FROM h {_ordered(9)} {hourly.UPSERT_TAIL}
), dy AS (
  {days.from_hourly_sql("h", _day_expr(zone), ordered=True)}
), mi AS (
  {minutes.upsert_head()}
  {minutes.select_sql("ins", _MINUTE)} {_ordered(5)}
  {minutes.upsert_tail()}
), mt AS (
  {minutes.upsert_head(per_team=True)}
  {minutes.select_sql("ins", _MINUTE, per_team=True)} {_ordered(6)}
  {minutes.upsert_tail(per_team=True)}
), up AS (
  INSERT INTO ledger_daily ({DAILY_KEY}, {", ".join(METRICS)})
  SELECT (ts AT TIME ZONE 'UTC')::date, kind, team, feature, user_name, route,
         COALESCE(NULLIF(target, ''), provider_model, ''), cache, outcome,
         COALESCE(error_kind, ''), count(*), {", ".join(f"sum({m})" for m in summed)}
  FROM ins GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 {_ordered(10)}
  {upsert_tail("ledger_daily", DAILY_KEY)}
)
SELECT count(*) FROM ins"""


def configure(conn: psycopg.Connection[Any]) -> None:
    """A new pooled connection: its staging table, and READ COMMITTED for its transactions
    whatever the role's or database's ``default_transaction_isolation``: the batches' lock
    scheme (:data:`LOCK_MADE_UP`) needs each statement to see what was committed before it
    (a batch waiting for the lock alone would not see, under REPEATABLE READ, the rows the
    holder committed meanwhile)."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.execute(STAGE_DDL)


def partition(day: dt.date) -> str:
    return f"ledger_raw_p{day:%Y%m%d}"


def ensure(
    conn: psycopg.Connection[Any], *, make_schema: bool, missing: list[dt.date], zone: str | None
) -> str | None:
    """Make what is missing under the DDL lock: the schema (``make_schema``), then the raw
    partitions of ``missing`` days. Returns the day roll-up's zone when the schema was made."""
    kept: str | None = None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        if make_schema:
            listed, split, raw = conn.execute(_BEFORE).fetchone() or (None, False, None)
            for stmt in _SCHEMA:
                conn.execute(stmt)
            if listed is None and raw is not None:  # listed later, a day at a time
                start = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=PARTITIONS_AHEAD)
                conn.execute(
                    "INSERT INTO ledger_meta VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (BACKFILL_KEY, start.isoformat()),
                )
            if split:  # split later, a day at a time (split_step), newest first
                first = conn.execute("SELECT min(day) FROM ledger_daily").fetchone()
                if first is not None and first[0] is not None:
                    start = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=PARTITIONS_AHEAD)
                    conn.execute(
                        "INSERT INTO ledger_meta VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (SPLIT_KEY, f"{start.isoformat()}/{first[0].isoformat()}"),
                    )
            kept = keep_days_in(conn, zone)
        for day in missing:
            lo, hi = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition(day)} PARTITION OF ledger_raw "
                f"FOR VALUES FROM ('{lo} 00:00+00') TO ('{hi} 00:00+00')"
            )
    return kept


def keep_days_in(conn: psycopg.Connection[Any], zone: str | None) -> str:
    """Settle the day roll-up's zone (``zone``, else the stored one, else UTC); rebuild the
    roll-up from the hourly one if the zone or its layout changed. Returns the zone."""
    meta = dict(conn.execute("SELECT name, value FROM ledger_meta").fetchall())
    stored = meta.get(days.ZONE_KEY)
    want = zone or stored or "UTC"
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
    return want


__all__ = ["BACKFILL_KEY", "COPY_SQL", "LOCK_ID", "LOCK_MADE_UP", "PARTITIONS_AHEAD",
           "SPLIT_KEY", "backfill_step", "configure", "ensure", "partition", "split_step",
           "write_sql"]  # fmt: skip
