"""The per-dimension day roll-up the dashboard reads: ``ledger_days``.

One row per ``(dim, day, team, value, status)`` of *request* records, where ``dim`` is one of
:data:`DIMENSIONS` and ``value`` is the record's value in it (for ``dim = 'team'``, the team
again), ``status`` the HTTP status for ``dim = 'team'`` (refusals and errors per team) and 0 for
the others (it would multiply their rows for nothing the pages show), ``day`` is the calendar day **in the configured time zone** (days since 1970-01-01) and
the metrics are the ledger's integer :data:`~trioproxy.ledger.columns.METRICS`. Spend by user
over a month is then ~30 rows per user, however many requests there were; the hourly roll-up
(:mod:`~trioproxy.ledger.hourly`, every dimension at once) would be hundreds of thousands of rows
for the same question at a million requests a month.

Written in the same transaction as ``ledger_raw`` from the rows actually inserted, so it always
equals the raw request rows. The zone it is kept in is stored in ``ledger_meta``
(``days_zone``); when the gateway opens the ledger with another zone (or a ledger made before
this table, or with other :data:`DIMENSIONS`), the table is rebuilt from ``ledger_hourly`` (exact for whole-hour offsets), by
:data:`rebuild_sql`, the same statements on both backends. A reader that asks for another zone
than the stored one (a reload changed it, or a CLI) gets the same rows folded from the hourly
roll-up (:func:`from_hours`): slower, never wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from trioproxy.ledger.columns import METRICS, UsdViews, upsert_tail
from trioproxy.ledger.hourly import COLUMNS as HOUR_COLUMNS
from trioproxy.ledger.hourly import HourRow

DIMENSIONS: tuple[str, ...] = ("team", "feature", "user", "key", "model", "route", "route_cache")
"""What the day roll-up is kept by: the Spend page's choices, and ``route_cache`` (the value is
``<route>|<cache status>``, :func:`split_route_cache`) for the Cache page."""
DIMS_KEY = "days_dimensions"
LAYOUT = "v3"
"""Bumped when what the rows hold changes: a ledger built otherwise is rebuilt on open."""
KEY_COLUMNS = "dim, day, team, value, status"
ZONE_KEY = "days_zone"
_EPOCH = dt.date(1970, 1, 1)

META_DDL = "CREATE TABLE IF NOT EXISTS ledger_meta (name {text} PRIMARY KEY, value {text} NOT NULL)"


def ddl(integer: str, text: str) -> str:
    metrics = ", ".join(f"{m} {integer} NOT NULL DEFAULT 0" for m in METRICS)
    return (
        f"CREATE TABLE IF NOT EXISTS ledger_days (dim {text} NOT NULL, day {integer} NOT NULL, "
        f"team {text} NOT NULL, value {text} NOT NULL, status {integer} NOT NULL, {metrics}, "
        f"PRIMARY KEY ({KEY_COLUMNS}))"
    )


SQLITE_DDL = ddl("INTEGER", "TEXT") + " WITHOUT ROWID"
"""Clustered on its key in SQLite: a range of days of one dimension is one contiguous read."""
PG_DDL = ddl("bigint", "text")


def meta(zone: str) -> dict[str, str]:
    """What ``ledger_meta`` says of the day roll-up once it is built."""
    return {ZONE_KEY: zone, DIMS_KEY: dims_signature()}


def dims_signature() -> str:
    return f"{LAYOUT}:{','.join(DIMENSIONS)}"


def day_number(day: dt.date) -> int:
    return (day - _EPOCH).days


def day_of_number(n: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=n)


@functools.lru_cache(maxsize=4096)
def local_day(hour: int, zone: str) -> int:
    """The local calendar day (a :func:`day_number`) of Unix hour ``hour`` in ``zone``."""
    return day_number(dt.datetime.fromtimestamp(hour * 3600, ZoneInfo(zone)).date())


def upsert_sql(placeholder: str) -> str:
    values = ", ".join([placeholder] * (5 + len(METRICS)))
    return f"{INSERT_HEAD}VALUES ({values}) {UPSERT_TAIL}"


def split_route_cache(value: str) -> tuple[str, str]:
    route, _, cache = value.rpartition("|")
    return route, cache


def _value_case(columns: dict[str, str]) -> str:
    whens = " ".join(f"WHEN '{d}' THEN {columns[d]}" for d in DIMENSIONS)
    return f"CASE d.dim {whens} END"


_DIMS = " UNION ALL ".join(f"SELECT '{d}' AS dim" for d in DIMENSIONS)


def select_sql(source: str, day_expr: str, *, count: str, columns: dict[str, str]) -> str:
    """Every dimension's rows from ``source`` (one statement, both backends): ``source`` is a
    table or CTE with team, status and the dimension columns named in ``columns``."""
    sums = ", ".join(f"sum({m})" for m in METRICS[1:])
    return (
        f"SELECT d.dim, {day_expr}, team, {_value_case(columns)}, "
        f"CASE d.dim WHEN 'team' THEN status ELSE 0 END, {count}, {sums} "
        f"FROM {source} CROSS JOIN ({_DIMS}) AS d GROUP BY 1, 2, 3, 4, 5"
    )


_HOURLY_NAMES = {d: HOUR_COLUMNS.get(d, d) for d in DIMENSIONS} | {
    "route_cache": "route || '|' || cache"
}
HOUR_DAY_DDL = "CREATE TEMP TABLE hour_day (hour {int} PRIMARY KEY, day {int} NOT NULL)"
INSERT_HEAD = f"INSERT INTO ledger_days ({KEY_COLUMNS}, {', '.join(METRICS)}) "
UPSERT_TAIL = upsert_tail("ledger_days", KEY_COLUMNS)


def from_hourly_sql(source: str, day_expr: str, *, ordered: bool = False) -> str:
    """Upsert the day rows of ``source``, rows shaped like ``ledger_hourly`` (the table, or
    PostgreSQL's per-batch CTE), with ``day_expr`` the local day of its ``hour``; ``ordered``:
    in key order (PostgreSQL's concurrent writers then lock the rows in one order)."""
    select = select_sql(source, day_expr, count="sum(requests)", columns=_HOURLY_NAMES)
    order = " ORDER BY 1, 2, 3, 4, 5" if ordered else ""
    return f"{INSERT_HEAD} {select}{order} {UPSERT_TAIL}"


REBUILD_SQL = from_hourly_sql("ledger_hourly JOIN hour_day USING (hour)", "hour_day.day")
"""Refill ``ledger_days`` from ``ledger_hourly`` and a temporary ``hour_day`` map."""


def hour_days(hours: Iterable[int], zone: str) -> list[tuple[int, int]]:
    return [(h, local_day(h, zone)) for h in hours]


def from_hour_aggregate(rows: Iterable[Sequence[object]], zone: str) -> list[tuple[object, ...]]:
    """Day upsert parameters from :func:`trioproxy.ledger.hourly.aggregate`'s rows."""
    acc: dict[tuple[object, ...], list[int]] = {}
    for r in rows:
        hour, team, feature, user, key, route, model, cache, status = r[:9]
        day = local_day(int(hour), zone)  # type: ignore[call-overload]
        values = (team, feature, user, key, model, route, f"{route}|{cache}")
        for dim, value in zip(DIMENSIONS, values, strict=True):
            kept = status if dim == "team" else 0
            sums = acc.setdefault((dim, day, team, value, kept), [0] * len(METRICS))
            for i, v in enumerate(r[9:]):
                sums[i] += v  # type: ignore[operator]
    return [(*k, *v) for k, v in acc.items()]


@dataclass(frozen=True, slots=True)
class DayRow(UsdViews):
    day: dt.date
    """In the zone asked for."""
    value: str
    team: str
    status: int
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


def check_dimension(dim: str) -> None:
    if dim not in DIMENSIONS:
        raise ValueError(f"day roll-up dimension must be one of {DIMENSIONS}, got {dim!r}")


KEEP = ("day", "value", "team", "status")
"""What a query may keep apart (the rest is summed): a column not kept reads the range's first
day, ``''`` or 0."""


def check_query(dim: str, keep: Sequence[str]) -> None:
    check_dimension(dim)
    if bad := [k for k in keep if k not in KEEP]:
        raise ValueError(f"a day roll-up query keeps a subset of {KEEP}, got {bad}")


def query_sql(
    placeholder: str, *, teams: int = 0, values: int = 0, keep: Sequence[str] = KEEP,
    first: int = 0,
) -> str:  # fmt: skip
    """Sums of the metrics per what ``keep`` names (a day not kept reads ``first``);
    parameters (:func:`query_params`): dim, first day, last day (inclusive), ``teams``,
    ``values``."""
    p = placeholder
    where = f"dim = {p} AND day >= {p} AND day <= {p}"
    if teams:
        where += f" AND team IN ({', '.join([p] * teams)})"
    if values:
        where += f" AND value IN ({', '.join([p] * values)})"
    cols = {"day": str(int(first)), "value": "''", "team": "''", "status": "0"}
    select = ", ".join(k if k in keep else cols[k] for k in KEEP)
    group = ", ".join(k for k in KEEP if k in keep)
    sums = ", ".join(f"sum({m})" for m in METRICS)
    sql = f"SELECT {select}, {sums} FROM ledger_days WHERE {where}"
    return sql + (f" GROUP BY {group}" if group else "")


CELLS = ("requests", "input_tokens", "output_tokens", "cost_micros", "saved_micros")
"""The Spend CSV's sums, in its column order."""


def cells_sql(placeholder: str, *, teams: int = 0) -> str:
    """Per day and value: (day, value, the :data:`CELLS` sums as integers), ordered by day and
    value; parameters as :func:`query_params` gives them (no values). Exactly the rows a CSV
    line is written from, nothing for the driver to build or convert besides."""
    p = placeholder
    where = f"dim = {p} AND day >= {p} AND day <= {p}"
    if teams:
        where += f" AND team IN ({', '.join([p] * teams)})"
    sums = ", ".join(f"CAST(sum({m}) AS bigint)" for m in CELLS)
    return (f"SELECT day, value, {sums} FROM ledger_days WHERE {where} "
            "GROUP BY day, value ORDER BY day, value")  # fmt: skip


def query_params(
    dim: str, first: dt.date, last: dt.date, teams: Sequence[str] | None,
    values: Sequence[str] | None,
) -> tuple[object, ...]:  # fmt: skip
    return (dim, day_number(first), day_number(last), *(teams or ()), *(values or ()))


def rows_of(raw: Iterable[Sequence[object]]) -> list[DayRow]:
    return [
        DayRow(day_of_number(int(r[0])), str(r[1]), str(r[2]), int(r[3]),  # type: ignore[call-overload]
               *(int(v or 0) for v in r[4:]))  # type: ignore[call-overload]
        for r in raw
    ]  # fmt: skip


def hours_of(first: dt.date, last: dt.date, zone: str) -> tuple[int, int]:
    """[first hour, end hour) in Unix hours covering local days ``first``..``last``."""
    tz = ZoneInfo(zone)
    lo = dt.datetime.combine(first, dt.time(), tz).timestamp()
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tz).timestamp()
    return int(lo // 3600), int(-(-hi // 3600))


def hourly_by(dim: str) -> list[str]:
    """The hourly roll-up's dimensions for ``dim``, then team and status (the slow path)."""
    return [*(("route", "cache") if dim == "route_cache" else (dim,)), "team", "status"]


def from_hours(
    rows: Iterable[HourRow],
    dim: str,
    zone: str,
    first: dt.date,
    last: dt.date,
    keep: Sequence[str] = KEEP,
    values: Sequence[str] | None = None,
) -> list[DayRow]:
    """Hourly rows grouped by :func:`hourly_by` folded into local days (the slow path); the
    status is kept for ``team`` only, as in the table."""
    status_kept = "status" in keep and dim == "team"
    wanted = None if values is None else set(values)
    acc: dict[tuple[int, str, str, int], list[int]] = {}
    lo, hi = day_number(first), day_number(last)
    for r in rows:
        day = local_day(r.hour, zone)
        if not lo <= day <= hi:
            continue
        *parts, team, status = r.group
        value = "|".join(parts)
        if wanted is not None and value not in wanted:
            continue
        key = (day if "day" in keep else lo, value if "value" in keep else "",
               team if "team" in keep else "", int(status) if status_kept else 0)  # fmt: skip
        sums = acc.setdefault(key, [0] * len(METRICS))
        for i, m in enumerate(METRICS):
            sums[i] += getattr(r, m)
    return [DayRow(day_of_number(d), v, t, s, *sums) for (d, v, t, s), sums in acc.items()]


__all__ = [
    "DIMENSIONS",
    "KEEP",
    "META_DDL",
    "PG_DDL",
    "REBUILD_SQL",
    "SQLITE_DDL",
    "ZONE_KEY",
    "DayRow",
    "check_dimension",
    "check_query",
    "day_number",
    "day_of_number",
    "dims_signature",
    "from_hour_aggregate",
    "from_hours",
    "hour_days",
    "hourly_by",
    "hours_of",
    "local_day",
    "meta",
    "query_params",
    "query_sql",
    "rows_of",
    "select_sql",
    "split_route_cache",
    "upsert_sql",
]
