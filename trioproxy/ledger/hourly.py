"""The hourly roll-up the dashboard reads: ``ledger_hourly``.

One row per ``(hour, team, feature, user, key, route, model, cache, status)`` of *request*
records (``hour`` = Unix time // 3600), with ``requests, input_tokens, output_tokens,
cost_usd, saved_usd``. Written in the same transaction as ``ledger_raw`` and
``ledger_daily``, from the rows actually inserted, so it always equals the sum of the raw
request rows (retention drops raw rows, never roll-ups).

Why hours: the dashboard shows days in the configured time zone (any zone with whole-hour
offsets folds exactly; half-hour zones are off by the offset's half hour at day edges),
and the key and the HTTP status (refusals, errors) are dimensions the daily roll-up lacks.
Its size grows with distinct combinations per hour, not with traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trioproxy.ledger.record import UsageRecord

DIMENSIONS: tuple[str, ...] = (
    "team", "feature", "user", "key", "route", "model", "cache", "status",
)  # fmt: skip
"""What the dashboard may group the hourly roll-up by."""
COLUMNS = {"user": "user_name", "key": "key_name"}
KEY_COLUMNS = "hour, team, feature, user_name, key_name, route, model, cache, status"
HourKey = tuple[int, str, str, str, str, str, str, str, int]

SQLITE_DDL = """CREATE TABLE IF NOT EXISTS ledger_hourly (
    hour INTEGER NOT NULL, team TEXT NOT NULL, feature TEXT NOT NULL, user_name TEXT NOT NULL,
    key_name TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, cache TEXT NOT NULL,
    status INTEGER NOT NULL, requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, saved_usd REAL NOT NULL,
    PRIMARY KEY (hour, team, feature, user_name, key_name, route, model, cache, status))"""
PG_DDL = """CREATE TABLE IF NOT EXISTS ledger_hourly (
    hour bigint NOT NULL, team text NOT NULL, feature text NOT NULL, user_name text NOT NULL,
    key_name text NOT NULL, route text NOT NULL, model text NOT NULL, cache text NOT NULL,
    status integer NOT NULL, requests bigint NOT NULL, input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL, cost_usd double precision NOT NULL,
    saved_usd double precision NOT NULL,
    PRIMARY KEY (hour, team, feature, user_name, key_name, route, model, cache, status))"""
UPSERT = f"""INSERT INTO ledger_hourly ({KEY_COLUMNS},
  requests, input_tokens, output_tokens, cost_usd, saved_usd)
VALUES ({", ".join(["{p}"] * 14)})
ON CONFLICT ({KEY_COLUMNS}) DO UPDATE SET
  requests = ledger_hourly.requests + excluded.requests,
  input_tokens = ledger_hourly.input_tokens + excluded.input_tokens,
  output_tokens = ledger_hourly.output_tokens + excluded.output_tokens,
  cost_usd = ledger_hourly.cost_usd + excluded.cost_usd,
  saved_usd = ledger_hourly.saved_usd + excluded.saved_usd"""


def upsert_sql(placeholder: str) -> str:
    return UPSERT.replace("{p}", placeholder)


def hour_key(r: UsageRecord) -> HourKey:
    model = r.target or r.provider_model or ""
    return (int(r.ts // 3600), r.team, r.feature, r.user, r.key_name, r.route, model, r.cache,
            r.status)  # fmt: skip


def aggregate(records: Iterable[UsageRecord]) -> list[tuple[object, ...]]:
    """Upsert parameters: the request records summed per hour key."""
    acc: dict[HourKey, list[float]] = {}
    for r in records:
        if r.kind != "request":
            continue
        sums = acc.setdefault(hour_key(r), [0, 0, 0, 0.0, 0.0])
        sums[0] += 1
        sums[1] += r.input_tokens
        sums[2] += r.output_tokens
        sums[3] += r.cost_usd
        sums[4] += r.saved_usd
    return [(*k, *v) for k, v in acc.items()]


@dataclass(frozen=True, slots=True)
class HourRow:
    hour: int
    group: tuple[str, ...]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    saved_usd: float


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
    return (
        f"SELECT hour{cols}, SUM(requests), SUM(input_tokens), SUM(output_tokens), "
        f"SUM(cost_usd), SUM(saved_usd) FROM ledger_hourly WHERE {where} "
        f"GROUP BY hour{cols} ORDER BY hour{cols}"
    )


def rows_of(raw: Iterable[Sequence[object]], n: int) -> list[HourRow]:
    return [
        HourRow(int(r[0]), tuple(str(v) for v in r[1 : n + 1]), int(r[n + 1]),  # type: ignore[call-overload]
                int(r[n + 2]), int(r[n + 3]), float(r[n + 4]), float(r[n + 5]))  # type: ignore[call-overload, arg-type]
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
    "upsert_sql",
]
