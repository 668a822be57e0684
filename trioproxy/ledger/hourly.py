"""The hourly roll-up the dashboard reads: ``ledger_hourly``.

One row per ``(hour, team, feature, user, key, route, model, cache, status)`` of *request*
records (``hour`` = Unix time // 3600), with the ledger's integer
:data:`~trioproxy.ledger.columns.METRICS` (requests, token buckets, µUSD billed and saved). Written in the same transaction as ``ledger_raw`` and
``ledger_daily``, from the rows actually inserted, so it always equals the sum of the raw
request rows (retention drops raw rows, never roll-ups).

Why hours: the dashboard shows days in the configured time zone (any zone with whole-hour
offsets folds exactly; half-hour zones are off by the offset's half hour at day edges),
and the key and the HTTP status (refusals, errors) are dimensions the daily roll-up lacks.
Its size grows with distinct combinations per hour, not with traffic.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trioproxy.ledger.columns import METRICS, UsdViews, upsert_tail
from trioproxy.ledger.record import UsageRecord

DIMENSIONS: tuple[str, ...] = (
    "team", "feature", "user", "key", "route", "model", "cache", "status",
)  # fmt: skip
"""What the dashboard may group the hourly roll-up by."""
COLUMNS = {"user": "user_name", "key": "key_name"}
KEY_COLUMNS = "hour, team, feature, user_name, key_name, route, model, cache, status"
HourKey = tuple[int, str, str, str, str, str, str, str, int]

_KEY_DDL = """hour {int} NOT NULL, team {text} NOT NULL, feature {text} NOT NULL,
    user_name {text} NOT NULL, key_name {text} NOT NULL, route {text} NOT NULL,
    model {text} NOT NULL, cache {text} NOT NULL, status {int} NOT NULL"""


def _ddl(integer: str, text: str, name: str = "ledger_hourly") -> str:
    metrics = ", ".join(f"{m} {integer} NOT NULL DEFAULT 0" for m in METRICS)
    keys = _KEY_DDL.format(int=integer, text=text)
    return f"CREATE TABLE IF NOT EXISTS {name} ({keys}, {metrics}, PRIMARY KEY ({KEY_COLUMNS}))"


SQLITE_DDL = _ddl("INTEGER", "TEXT")
PG_DDL = _ddl("bigint", "text")
INSERT_HEAD = f"INSERT INTO ledger_hourly ({KEY_COLUMNS}, {', '.join(METRICS)})"
UPSERT_TAIL = upsert_tail("ledger_hourly", KEY_COLUMNS)
UPSERT = f"{INSERT_HEAD} VALUES ({', '.join(['{p}'] * (9 + len(METRICS)))}) {UPSERT_TAIL}"


def select_sql(source: str, hour_expr: str) -> str:
    """The hourly rows of the request records in ``source`` (raw columns), named like the
    table's; one statement for both backends (SQLite's backfill, PostgreSQL's per batch)."""
    sums = ", ".join(f"sum({m}) AS {m}" for m in METRICS[1:])
    return (
        f"SELECT {hour_expr} AS hour, team, feature, user_name, key_name, route, "
        "COALESCE(NULLIF(target, ''), provider_model, '') AS model, cache, status, "
        f"count(*) AS requests, {sums} FROM {source} WHERE kind = 'request' "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
    )


def sqlite_ddl(name: str) -> str:
    """The SQLite table under another name (a migration builds the new shape beside the old)."""
    return _ddl("INTEGER", "TEXT", name)


def upsert_sql(placeholder: str) -> str:
    return UPSERT.replace("{p}", placeholder)


def hour_key(r: UsageRecord) -> HourKey:
    model = r.target or r.provider_model or ""
    return (int(r.ts // 3600), r.team, r.feature, r.user, r.key_name, r.route, model, r.cache,
            r.status)  # fmt: skip


_SUMMED = operator.attrgetter(*METRICS[1:])


def aggregate(records: Iterable[UsageRecord]) -> list[tuple[object, ...]]:
    """Upsert parameters: the request records summed per hour key (:data:`METRICS` order)."""
    acc: dict[HourKey, list[int]] = {}
    for r in records:
        if r.kind != "request":
            continue
        sums = acc.setdefault(hour_key(r), [0] * len(METRICS))
        sums[0] += 1
        for i, v in enumerate(_SUMMED(r), 1):
            sums[i] += v
    return [(*k, *v) for k, v in acc.items()]


@dataclass(frozen=True, slots=True)
class HourRow(UsdViews):
    hour: int
    group: tuple[str, ...]
    requests: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_micros: int
    saved_micros: int
    cache_saved_micros: int


def check_dimensions(by: Sequence[str]) -> None:
    bad = [d for d in by if d not in DIMENSIONS]
    if bad:
        raise ValueError(f"hourly dimensions must be among {DIMENSIONS}, got {bad}")


def query_sql(by: Sequence[str], placeholder: str, *, teams: int = 0) -> str:
    """Per hour and ``by``; parameters: first hour, end hour (exclusive), then ``teams`` names."""
    check_dimensions(by)
    cols = "".join(f", {COLUMNS.get(d, d)}" for d in by)
    p = placeholder
    where = f"hour >= {p} AND hour < {p}"
    if teams:
        where += f" AND team IN ({', '.join([p] * teams)})"
    sums = ", ".join(f"SUM({m})" for m in METRICS)
    return (
        f"SELECT hour{cols}, {sums} FROM ledger_hourly WHERE {where} "
        f"GROUP BY hour{cols} ORDER BY hour{cols}"
    )


def rows_of(raw: Iterable[Sequence[object]], n: int) -> list[HourRow]:
    return [
        HourRow(int(r[0]), tuple(str(v) for v in r[1 : n + 1]),  # type: ignore[call-overload]
                *(int(v or 0) for v in r[n + 1 :]))  # type: ignore[call-overload]
        for r in raw
    ]  # fmt: skip


__all__ = [
    "DIMENSIONS",
    "PG_DDL",
    "SQLITE_DDL",
    "HourRow",
    "aggregate",
    "check_dimensions",
    "hour_key",
    "query_sql",
    "rows_of",
    "select_sql",
    "sqlite_ddl",
    "upsert_sql",
]
