"""Per-minute counters per target, the Providers page's traffic: ``ledger_minutes``.

One row per ``(minute, target, role, outcome, error_kind)`` of *attempt* records (``minute`` =
Unix time // 60; ``role`` the hedge role, ``''`` when none; ``error_kind`` ``''`` when the attempt
did not fail) with the number of attempts and two histograms over :data:`BOUNDS_MS`: latency
and time to first byte. Percentiles come from the histograms (:func:`percentile`, linear inside
a bucket), so an hour of traffic per target is at most 60 x a few rows, whatever the rate.

Written in the same transaction as the raw rows, from the rows actually inserted: SQLite sums
them in Python (:func:`aggregate`), PostgreSQL in SQL (:func:`select_sql`); one bucket rule
(:data:`BOUNDS_MS`) for both. Retention keeps these rows (a day is ~1,440 rows per target);
:data:`KEEP_DAYS` of them are kept: the ledger writer's hourly retention pass drops older
ones, also when raw rows are kept forever (``ledger_retention_days`` unset).
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
LAT = tuple(f"lat_{i}" for i in range(BUCKETS))
TTFB = tuple(f"ttfb_{i}" for i in range(BUCKETS))
COUNTS: tuple[str, ...] = ("attempts", *LAT, *TTFB)
MinuteKey = tuple[int, str, str, str, str]


def ddl(integer: str, text: str) -> str:
    counts = ", ".join(f"{c} {integer} NOT NULL DEFAULT 0" for c in COUNTS)
    return (
        f"CREATE TABLE IF NOT EXISTS ledger_minutes (minute {integer} NOT NULL, "
        f"target {text} NOT NULL, role {text} NOT NULL, outcome {text} NOT NULL, "
        f"error_kind {text} NOT NULL, {counts}, PRIMARY KEY ({KEY_COLUMNS}))"
    )


SQLITE_DDL = ddl("INTEGER", "TEXT") + " WITHOUT ROWID"
PG_DDL = ddl("bigint", "text")


def bucket(ms: float) -> int:
    """The histogram bucket of a duration: the first bound above it."""
    return bisect.bisect_right(BOUNDS_MS, ms)


def aggregate(records: Iterable[UsageRecord]) -> list[tuple[object, ...]]:
    """Upsert parameters (:data:`KEY_COLUMNS`, then :data:`COUNTS`) of the attempt records."""
    acc: dict[MinuteKey, list[int]] = {}
    for r in records:
        if r.kind != "attempt":
            continue
        key = (int(r.ts // 60), r.target or "", r.hedge_role or "", r.outcome, r.error_kind or "")
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


def select_sql(source: str, minute_expr: str) -> str:
    """The same rows as :func:`aggregate`, in SQL over ``source`` (raw columns)."""
    sums = ", ".join([*_bucket_sums("latency_ms"), *_bucket_sums("ttfb_ms")])
    return (
        f"SELECT {minute_expr}, COALESCE(target, ''), COALESCE(hedge_role, ''), outcome, "
        f"COALESCE(error_kind, ''), count(*), {sums} FROM {source} WHERE kind = 'attempt' "
        "GROUP BY 1, 2, 3, 4, 5"
    )


def upsert_head() -> str:
    return f"INSERT INTO ledger_minutes ({KEY_COLUMNS}, {', '.join(COUNTS)})"


def upsert_tail() -> str:
    return columns.upsert_tail("ledger_minutes", KEY_COLUMNS, COUNTS)


def upsert_sql(placeholder: str) -> str:
    values = ", ".join([placeholder] * (5 + len(COUNTS)))
    return f"{upsert_head()} VALUES ({values}) {upsert_tail()}"


def query_sql(placeholder: str) -> str:
    """Parameters: first minute, end minute (exclusive)."""
    p = placeholder
    return (
        f"SELECT {KEY_COLUMNS}, {', '.join(COUNTS)} FROM ledger_minutes "
        f"WHERE minute >= {p} AND minute < {p}"
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
    "PG_DDL",
    "SQLITE_DDL",
    "MinuteRow",
    "aggregate",
    "bucket",
    "percentile",
    "query_sql",
    "rows_of",
    "select_sql",
    "upsert_sql",
]
