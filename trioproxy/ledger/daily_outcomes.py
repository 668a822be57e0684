"""``ledger_daily`` by outcome: how an upgraded ledger's older day rows get theirs.

``ledger_daily`` keeps each record's ``outcome`` and ``error_kind`` in its key (see
:mod:`~trioproxy.ledger.backend`), so that ``trioproxy report --by day,outcome`` tells the
requests served from those refused (``denied``: a budget, a rate limit, overload) or failed
(``error``: the upstream, the caller gone), and ``error_kind`` why. A ledger made before
gains both columns, ``''`` on its rows, and then has those rows split by the raw rows
(:func:`split_sql`, the same statements on both backends): a day row whose raw rows are all
still there (their count and every sum equal the row's) is replaced by their rows per outcome
and error kind; one whose raw rows retention removed (or removed in part) keeps ``''``, and a
report prints it as ``-``. SQLite: one scan of the raw rows, once, when the upgraded gateway
first opens the ledger (as the hourly roll-up's backfill), holding its write lock (measured on
a busy 2-core box: 5.3 s for 200,000 raw rows). PostgreSQL: a day at a time after the open,
one day partition's scan per retention round (:func:`day_split_sql`), then the batches' lock
held alone for milliseconds; it was the whole raw table's scan in the first open's
DDL transaction (2.8 s per 200,000 raw rows, while every batch waited: minutes at a month of
1,000,000 requests a day). Until its day is split, a day row reads ``-``.
"""

from __future__ import annotations

from trioproxy.ledger.backend import DAILY_KEY
from trioproxy.ledger.columns import METRICS

_KEY = [k.strip() for k in DAILY_KEY.split(",")]
_OLD_KEY = ", ".join(k for k in _KEY if k not in ("outcome", "error_kind"))
"""The key the day rows had before."""
_SPLIT, _WHOLE = "daily_split", "daily_whole"


def _pieces() -> tuple[str, list[str], str, str, str, str]:
    """The SQL pieces both splits join: the raw rows' sums, the old key's columns, a day row
    and a split row of one key, of equal sums, the totals, the metric columns."""
    old = [k.strip() for k in _OLD_KEY.split(",")]
    return (
        ", ".join(f"sum({m}) AS {m}" for m in METRICS[1:]),
        old,
        " AND ".join(f"d.{k} = s.{k}" for k in old),
        " AND ".join(f"d.{m} = s.{m}" for m in METRICS),
        ", ".join(f"sum({m}) AS {m}" for m in METRICS),
        ", ".join(METRICS),
    )


def split_sql(day_expr: str, *, analyze: bool = False) -> list[str]:
    """Statements (in the open transaction) that split the rows of ``ledger_daily`` without an
    outcome by the raw rows, where those are all there; ``day_expr`` is a raw row's UTC day as
    the table stores it. ``analyze`` (PostgreSQL): give the planner the tables' statistics
    before it joins them (without, it nested-looped the join: 4.8 s for 1,728 day rows, 18
    minutes for 200,000 raw rows; with, 0.02 s)."""
    sums, old, same_key, same_sums, totals, metrics = _pieces()
    return [
        f"CREATE TEMP TABLE {_SPLIT} AS SELECT {day_expr} AS day, kind, team, feature, "
        "user_name, route, COALESCE(NULLIF(target, ''), provider_model, '') AS model, cache, "
        "outcome, COALESCE(error_kind, '') AS error_kind, count(*) AS requests, "
        f"{sums} FROM ledger_raw GROUP BY {', '.join(str(i) for i in range(1, 11))}",
        *([f"ANALYZE {_SPLIT}", "ANALYZE ledger_daily"] if analyze else []),
        f"CREATE TEMP TABLE {_WHOLE} AS SELECT {', '.join(f'd.{k}' for k in old)} "
        f"FROM ledger_daily d JOIN (SELECT {_OLD_KEY}, {totals} FROM {_SPLIT} "
        f"GROUP BY {_OLD_KEY}) s ON {same_key} "
        f"WHERE d.outcome = '' AND d.error_kind = '' AND {same_sums}",
        *([f"ANALYZE {_WHOLE}"] if analyze else []),
        f"DELETE FROM ledger_daily WHERE outcome = '' AND error_kind = '' "
        f"AND ({_OLD_KEY}) IN (SELECT {_OLD_KEY} FROM {_WHOLE})",
        f"INSERT INTO ledger_daily ({DAILY_KEY}, {metrics}) "
        f"SELECT {', '.join(f's.{k}' for k in _KEY)}, {', '.join(f's.{m}' for m in METRICS)} "
        f"FROM {_SPLIT} s JOIN {_WHOLE} d ON {same_key}",
        f"DROP TABLE {_SPLIT}",
        f"DROP TABLE {_WHOLE}",
    ]


def day_split_sql() -> list[str]:
    """PostgreSQL's split of one day (:data:`PG_DAY`; parameters ``lo`` and ``hi``, the day's
    bounds, and ``day``), run by :func:`~trioproxy.ledger.postgres_schema.split_step` after
    the ledger is open, a day at a time, while batches add rows by outcome to the same days:
    a group (the old key) is split when its raw rows' count and sums equal those of all its
    day rows (the one without outcome and those written since), which are all replaced by
    the raw rows' per outcome. The first statement is the scan (run before the batches' lock
    is taken); temporary tables dropped at commit; ANALYZE'd (see :func:`split_sql`)."""
    sums, old, same_key, same_sums, totals, metrics = _pieces()
    return [
        f"CREATE TEMP TABLE {_SPLIT} ON COMMIT DROP AS SELECT {PG_DAY} AS day, kind, team, "
        "feature, user_name, route, COALESCE(NULLIF(target, ''), provider_model, '') AS model, "
        "cache, outcome, COALESCE(error_kind, '') AS error_kind, count(*) AS requests, "
        f"{sums} FROM ledger_raw WHERE ts >= %(lo)s AND ts < %(hi)s "
        f"GROUP BY {', '.join(str(i) for i in range(1, 11))}",
        f"ANALYZE {_SPLIT}",
        f"CREATE TEMP TABLE {_WHOLE} ON COMMIT DROP AS SELECT {', '.join(f'd.{k}' for k in old)} "
        f"FROM (SELECT {_OLD_KEY}, {totals} FROM ledger_daily WHERE day = %(day)s "
        f"GROUP BY {_OLD_KEY} HAVING bool_or(outcome = '' AND error_kind = '')) d "
        f"JOIN (SELECT {_OLD_KEY}, {totals} FROM {_SPLIT} GROUP BY {_OLD_KEY}) s "
        f"ON {same_key} WHERE {same_sums}",
        f"ANALYZE {_WHOLE}",
        f"DELETE FROM ledger_daily WHERE day = %(day)s "
        f"AND ({_OLD_KEY}) IN (SELECT {_OLD_KEY} FROM {_WHOLE})",
        f"INSERT INTO ledger_daily ({DAILY_KEY}, {metrics}) "
        f"SELECT {', '.join(f's.{k}' for k in _KEY)}, {', '.join(f's.{m}' for m in METRICS)} "
        f"FROM {_SPLIT} s JOIN {_WHOLE} d ON {same_key}",
    ]


SQLITE_DAY = "date(ts, 'unixepoch')"
PG_DAY = "(ts AT TIME ZONE 'UTC')::date"


__all__ = ["PG_DAY", "SQLITE_DAY", "day_split_sql", "split_sql"]
