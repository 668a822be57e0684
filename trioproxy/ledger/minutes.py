"""Per-minute counters per target, the Providers page's traffic: ``ledger_minutes``, and
the same per team, ``ledger_minutes_teams``.

One row per ``(minute, target, role, outcome, error_kind)`` of *attempt* records (``minute`` =
Unix time // 60; ``role`` the hedge role, ``''`` when none; ``error_kind`` ``''`` when the attempt
did not fail) with the number of attempts and two histograms over :data:`BOUNDS_MS`: latency
and time to first byte. Percentiles come from the histograms (:func:`percentile`, linear inside
a bucket), so an hour of traffic per target is at most 60 x a few rows, whatever the rate.

``ledger_minutes_teams`` keys the same rows by the caller's team too (``per_team``): what a
principal of some teams reads (:func:`query_sql`), summed over its teams in the database. A
second table, so that the every-team read stays one row per target and outcome a minute (one
table by team, summed at read, was 3.5x slower for 20 busy teams: 60,000 rows an hour).

Written in the same transaction as the raw rows, from the rows actually inserted: SQLite sums
them in Python (:func:`aggregate`), PostgreSQL in SQL (:func:`select_sql`); one bucket rule
(:data:`BOUNDS_MS`) for both. Retention keeps these rows (a day is ~1,440 rows per target, and
per target and team); :data:`KEEP_DAYS` of them are kept: the ledger writer's hourly retention
pass drops older ones (:data:`TABLES`), also when raw rows are kept forever
(``ledger_retention_days`` unset). A ledger made before the team table gets it empty: its
traffic is counted from then on.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trioproxy.ledger import columns
from trioproxy.ledger.record import UsageRecord

BOUNDS_MS: tuple[float, ...] = (
    5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 750,
    1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000, 30_000, 60_000,
)  # fmt: skip
"""Upper bounds (exclusive) of the histogram buckets; one more bucket holds the rest."""
BUCKETS = len(BOUNDS_MS) + 1
KEEP_DAYS = 8
KEY_COLUMNS = "minute, target, role, outcome, error_kind"
"""The every-team table's key, and what a read keeps apart (:class:`MinuteRow`)."""
TEAM_KEY_COLUMNS = "minute, team, target, role, outcome, error_kind"
"""The team table's key: a minute's range first, as retention deletes it."""
TABLES = ("ledger_minutes", "ledger_minutes_teams")
LAT = tuple(f"lat_{i}" for i in range(BUCKETS))
TTFB = tuple(f"ttfb_{i}" for i in range(BUCKETS))
COUNTS: tuple[str, ...] = ("attempts", *LAT, *TTFB)
MinuteKey = tuple[int | str, ...]


def _table(per_team: bool) -> tuple[str, str]:
    """The table and its key columns."""
    return (TABLES[1], TEAM_KEY_COLUMNS) if per_team else (TABLES[0], KEY_COLUMNS)


def ddl(integer: str, text: str, *, per_team: bool = False) -> str:
    table, key = _table(per_team)
    team = f"team {text} NOT NULL, " if per_team else ""
    counts = ", ".join(f"{c} {integer} NOT NULL DEFAULT 0" for c in COUNTS)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (minute {integer} NOT NULL, {team}"
        f"target {text} NOT NULL, role {text} NOT NULL, outcome {text} NOT NULL, "
        f"error_kind {text} NOT NULL, {counts}, PRIMARY KEY ({key}))"
    )


SQLITE_DDL = ddl("INTEGER", "TEXT") + " WITHOUT ROWID"
PG_DDL = ddl("bigint", "text")
SQLITE_TEAMS_DDL = ddl("INTEGER", "TEXT", per_team=True) + " WITHOUT ROWID"
PG_TEAMS_DDL = ddl("bigint", "text", per_team=True)


def bucket(ms: float) -> int:
    """The histogram bucket of a duration: the first bound above it."""
    return bisect.bisect_right(BOUNDS_MS, ms)


def aggregate(
    records: Iterable[UsageRecord], *, per_team: bool = False
) -> list[tuple[object, ...]]:
    """Upsert parameters (:data:`KEY_COLUMNS`, or :data:`TEAM_KEY_COLUMNS` ``per_team``,
    then :data:`COUNTS`) of the attempt records."""
    acc: dict[MinuteKey, list[int]] = {}
    for r in records:
        if r.kind != "attempt":
            continue
        target, role, kind = r.target or "", r.hedge_role or "", r.error_kind or ""
        minute = int(r.ts // 60)
        key: MinuteKey = (
            (minute, r.team, target, role, r.outcome, kind)
            if per_team
            else (minute, target, role, r.outcome, kind)
        )
        counts = acc.get(key)
        if counts is None:
            counts = acc[key] = [0] * len(COUNTS)
        counts[0] += 1
        counts[1 + bucket(r.latency_ms)] += 1
        if r.ttfb_ms is not None:
            counts[1 + BUCKETS + bucket(r.ttfb_ms)] += 1
    return [(*k, *v) for k, v in acc.items()]


def _bucket_sums(column: str) -> list[str]:
    out = []
    lo = None
    for hi in (*BOUNDS_MS, None):
        conds = [f"{column} >= {lo}"] if lo is not None else [f"{column} IS NOT NULL"]
        if hi is not None:
            conds.append(f"{column} < {hi}")
        out.append(f"sum(CASE WHEN {' AND '.join(conds)} THEN 1 ELSE 0 END)")
        lo = hi
    return out


def select_sql(source: str, minute_expr: str, *, per_team: bool = False) -> str:
    """The same rows as :func:`aggregate`, in SQL over ``source`` (raw columns)."""
    sums = ", ".join([*_bucket_sums("latency_ms"), *_bucket_sums("ttfb_ms")])
    team, group = ("team, ", "1, 2, 3, 4, 5, 6") if per_team else ("", "1, 2, 3, 4, 5")
    return (
        f"SELECT {minute_expr}, {team}COALESCE(target, ''), COALESCE(hedge_role, ''), outcome, "
        f"COALESCE(error_kind, ''), count(*), {sums} FROM {source} WHERE kind = 'attempt' "
        f"GROUP BY {group}"
    )


def upsert_head(*, per_team: bool = False) -> str:
    table, key = _table(per_team)
    return f"INSERT INTO {table} ({key}, {', '.join(COUNTS)})"


def upsert_tail(*, per_team: bool = False) -> str:
    return columns.upsert_tail(*_table(per_team), COUNTS)


def upsert_sql(placeholder: str, *, per_team: bool = False) -> str:
    values = ", ".join([placeholder] * ((6 if per_team else 5) + len(COUNTS)))
    return f"{upsert_head(per_team=per_team)} VALUES ({values}) {upsert_tail(per_team=per_team)}"


def query_sql(placeholder: str, *, teams: int = 0) -> str:
    """Parameters: first minute, end minute (exclusive), then ``teams`` teams: every team's
    rows (``teams`` 0), or the team table's rows of those teams, summed per
    :data:`KEY_COLUMNS` in the database."""
    p = placeholder
    where = f"minute >= {p} AND minute < {p}"
    if not teams:
        return f"SELECT {KEY_COLUMNS}, {', '.join(COUNTS)} FROM {TABLES[0]} WHERE {where}"
    sums = ", ".join(f"sum({c})" for c in COUNTS)
    return (
        f"SELECT {KEY_COLUMNS}, {sums} FROM {TABLES[1]} WHERE {where} "
        f"AND team IN ({', '.join([p] * teams)}) GROUP BY {KEY_COLUMNS}"
    )


@dataclass(frozen=True, slots=True)
class MinuteRow:
    minute: int
    target: str
    role: str
    outcome: str
    error_kind: str
    attempts: int
    latency: tuple[int, ...]
    """Counts per bucket of :data:`BOUNDS_MS` (one more for the rest)."""
    ttfb: tuple[int, ...]


def rows_of(raw: Iterable[Sequence[object]]) -> list[MinuteRow]:
    out = []
    for r in raw:
        n = [int(v or 0) for v in r[5:]]  # type: ignore[call-overload]
        out.append(MinuteRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]),  # type: ignore[call-overload]
                             n[0], tuple(n[1 : 1 + BUCKETS]), tuple(n[1 + BUCKETS :])))  # fmt: skip
    return out


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, linear inside its bucket; None when empty.

    The open last bucket reports its lower bound."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            lo = BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(BOUNDS_MS):
                return float(lo)
            return float(lo + (BOUNDS_MS[i] - lo) * max(rank - seen, 0) / n)
        seen += n
    return float(BOUNDS_MS[-1])


__all__ = [
    "BOUNDS_MS",
    "BUCKETS",
    "COUNTS",
    "KEEP_DAYS",
    "KEY_COLUMNS",
    "PG_DDL",
    "PG_TEAMS_DDL",
    "SQLITE_DDL",
    "SQLITE_TEAMS_DDL",
    "TABLES",
    "TEAM_KEY_COLUMNS",
    "MinuteRow",
    "aggregate",
    "bucket",
    "percentile",
    "query_sql",
    "rows_of",
    "select_sql",
    "upsert_sql",
]
