"""Bring a SQLite ledger made by an older version to the current schema, keeping every row.

* ``ledger_daily`` made before the ``cache`` dimension gains it (``''`` on old rows);
* ``ledger_daily`` made before the ``outcome`` and ``error_kind`` dimensions gains them, its
  rows split by the raw rows where those are all there (:mod:`~trioproxy.ledger.
  daily_outcomes`), ``''`` on the others;
* every table made before token buckets and integer µUSD gains the bucket columns (0 on old
  rows) and has its float-USD ``cost_usd`` / ``saved_usd`` turned into ``cost_micros`` /
  ``saved_micros`` (rounded to the µUSD, which is exact for amounts that were µUSD / 10^6).
  Old rows' ``input_tokens`` stay as recorded (before buckets they included cached prompt
  tokens). Runs inside the open transaction of :meth:`SqliteLedger.open`.
"""

from __future__ import annotations

import sqlite3

from trioproxy.ledger import daily_outcomes, hourly
from trioproxy.ledger.backend import DAILY_KEY
from trioproxy.ledger.columns import (
    COLUMNS,
    FIELDS,
    LEGACY_MONEY,
    METRICS,
    NOT_NULL,
    default_sql,
    sqlite_type,
)

DAILY_DDL = (
    """CREATE TABLE IF NOT EXISTS {name} (
    day TEXT NOT NULL, kind TEXT NOT NULL, team TEXT NOT NULL, feature TEXT NOT NULL,
    user_name TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, cache TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT '', error_kind TEXT NOT NULL DEFAULT '', """
    + ", ".join(f"{m} INTEGER NOT NULL" for m in METRICS)
    + f""",
    PRIMARY KEY ({DAILY_KEY}))"""
)
_DAILY_KEY = [k.strip() for k in DAILY_KEY.split(",")]
_LEGACY_OF = {new: old for old, new in LEGACY_MONEY.items()}


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _from_legacy(metric: str, cols: list[str]) -> str:
    """How to read ``metric`` from an older table: itself, its float-USD ancestor, or 0."""
    if metric in cols:
        return metric
    if (old := _LEGACY_OF.get(metric)) in cols:
        return f"CAST(ROUND({old} * 1000000) AS INTEGER)"
    return "0"


def _rebuild(conn: sqlite3.Connection, table: str, ddl: str, key: str, cols: list[str]) -> None:
    """Copy ``table`` into the current shape (``ddl`` with ``{name}``), then swap."""
    conn.execute(ddl.format(name=f"{table}_v2"))
    values = ", ".join(_from_legacy(m, cols) for m in METRICS)
    conn.execute(
        f"INSERT INTO {table}_v2 ({key}, {', '.join(METRICS)}) SELECT {key}, {values} FROM {table}"
    )
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_v2 RENAME TO {table}")


def migrate(conn: sqlite3.Connection) -> None:
    daily = _columns(conn, "ledger_daily")
    split = bool(daily) and "outcome" not in daily
    if split or (daily and ("cache" not in daily or any(old in daily for old in LEGACY_MONEY))):
        if "cache" not in daily:  # older still: no cache dimension
            conn.execute("ALTER TABLE ledger_daily ADD COLUMN cache TEXT NOT NULL DEFAULT ''")
            daily.append("cache")
        key = ", ".join(k for k in _DAILY_KEY if k in daily)  # the others: ''
        _rebuild(conn, "ledger_daily", DAILY_DDL, key, daily)
    hours = _columns(conn, "ledger_hourly")
    if hours and any(old in hours for old in LEGACY_MONEY):
        ddl = hourly.sqlite_ddl("{name}")
        _rebuild(conn, "ledger_hourly", ddl, hourly.KEY_COLUMNS, hours)
    raw = _columns(conn, "ledger_raw")
    if not raw:
        return
    for field, col in zip(FIELDS, COLUMNS, strict=True):
        if col not in raw:
            null = f" NOT NULL DEFAULT {default_sql(field)}" if field in NOT_NULL else ""
            conn.execute(f"ALTER TABLE ledger_raw ADD COLUMN {col} {sqlite_type(field)}{null}")
    for old, new in LEGACY_MONEY.items():
        if old in raw:
            conn.execute(f"UPDATE ledger_raw SET {new} = {_from_legacy(new, [old])}")
            conn.execute(f"ALTER TABLE ledger_raw DROP COLUMN {old}")
    if split:  # by the raw rows, in their current shape
        for stmt in daily_outcomes.split_sql(daily_outcomes.SQLITE_DAY):
            conn.execute(stmt)


__all__ = ["DAILY_DDL", "migrate"]
