"""The ledger backend seam: what the writer and the reports need from a database.

Two implementations: :mod:`trioproxy.ledger.sqlite` (default, a file in ``state_dir``) and
:mod:`trioproxy.ledger.postgres` (when ``database_url`` is configured).

Every backend keeps these tables (and the roll-ups of :mod:`~trioproxy.ledger.hourly`,
:mod:`~trioproxy.ledger.days` and :mod:`~trioproxy.ledger.minutes`, written in the same
transaction from the same inserted rows):

* ``ledger_raw``: one row per :class:`UsageRecord`, unique on the idempotency key
  ``(request_id, kind, attempt, target)`` (``target`` stored as ``''`` when absent), written with
  "insert, ignore conflicts" so a replayed batch never double-counts.
* ``ledger_daily``: the rollup, one row per
  ``(day, kind, team, feature, user, route, model, cache, outcome, error_kind)`` with the
  :data:`METRICS` (requests,
  the token buckets, µUSD billed and saved, all integers). It is updated in the same
  transaction as the raw insert, from the rows that were *actually inserted*, so rollup totals
  always equal the sum of the raw rows (until retention removes raw rows; rollups are kept).

``model`` is the record's ``target`` (the model config name), else its ``provider_model``,
else ``''``. ``day`` is the UTC calendar day of ``ts``. ``cache`` is the record's cache status
(``off``, ``miss``, ``bypass``, ``exact``, ``semantic``); rollup rows written before the
column existed carry ``''``. ``outcome`` is the record's (a request: ``served``, ``denied``
(refused by the gateway's policy: a budget, a rate limit, overload), ``error`` (failed:
upstream failures, the caller gone, a bug) or ``interrupted``), ``error_kind`` its
:class:`~trioproxy.errors.ErrorKind` value (``''`` when none): how a report tells served
requests from refused ones. Rows rolled up before those columns existed were split by the raw
rows when the ledger was upgraded (:mod:`~trioproxy.ledger.daily_outcomes`); those whose raw
rows were gone carry ``''`` for both.

Reports read only the rollup. Request records carry the whole request's cost (the gateway
includes losing hedges and failed attempts), so spend reports use ``kind='request'`` rows;
attempt rows are rolled up separately for per-target analysis.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trioproxy.core.types import TOKEN_COUNTS
from trioproxy.ledger.columns import LEGACY_MONEY, METRICS, UsdViews
from trioproxy.ledger.days import DayRow
from trioproxy.ledger.hourly import HourRow
from trioproxy.ledger.minutes import MinuteRow
from trioproxy.ledger.reads import DayCells
from trioproxy.ledger.recent import Attempt, Cursor, Filters
from trioproxy.ledger.record import RecordKind, UsageRecord

DIMENSIONS: tuple[str, ...] = (
    "team", "feature", "user", "model", "route", "day", "cache", "outcome", "error_kind",
)  # fmt: skip
"""The columns a report may group by."""
DAILY_KEY = "day, kind, team, feature, user_name, route, model, cache, outcome, error_kind"
"""``ledger_daily``'s key columns, in :data:`RollupKey` order."""

_FIELDS = frozenset(f.name for f in dataclasses.fields(UsageRecord))

RequestTotals = tuple[str, float, str, str, int, int]
"""(request_id, ts, team, user, cost_micros, tokens) of one request record."""
REQUEST_TOKENS = " + ".join(TOKEN_COUNTS)
"""A request record's token total in SQL (:data:`trioproxy.core.types.TOKEN_COUNTS`)."""


@dataclass(frozen=True, slots=True)
class ReportRow(UsdViews):
    group: tuple[str, ...]
    """Values of the ``by`` dimensions, in the order asked for."""
    requests: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_micros: int
    saved_micros: int
    """Saved by the gateway's own cache (hits)."""
    cache_saved_micros: int
    """Saved by the providers' prompt caches."""

    @classmethod
    def of(cls, group: tuple[str, ...], values: Sequence[Any]) -> ReportRow:
        return cls(group, *(int(v or 0) for v in values))


class LedgerBackend(Protocol):
    """A durable store of usage records. Every method may raise on a database failure."""

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        """Insert records and update rollups atomically; return how many were new.

        Idempotent: records whose key is already stored are skipped (and not rolled up).
        A real record takes the place of the row the journal's recovery made up for it,
        roll-ups included (:mod:`~trioproxy.ledger.provisional`).
        """
        ...

    async def query(
        self,
        *,
        by: Sequence[str],
        since: dt.datetime,
        until: dt.datetime | None = None,
        kind: RecordKind = "request",
    ) -> list[ReportRow]:
        """Rollup totals grouped by ``by`` (subset of :data:`DIMENSIONS`) for days in range."""
        ...

    async def query_hours(
        self,
        *,
        by: Sequence[str],
        first_hour: int,
        end_hour: int,
        teams: Sequence[str] | None = None,
    ) -> list[HourRow]:
        """The hourly roll-up (:mod:`trioproxy.ledger.hourly`) of request records, per hour
        and ``by``, for Unix hours in ``[first_hour, end_hour)``; only ``teams`` if given."""
        ...

    async def request_spend(self, *, since: float, until: float) -> list[RequestTotals]:
        """The request records with ``since <= ts < until``: id, ts, team, user, µUSD
        billed and tokens (every input bucket plus output); for a budget rebuild."""
        ...

    days_zone: str
    """The zone the day roll-up is kept in (:mod:`trioproxy.ledger.days`)."""

    async def query_days(
        self,
        *,
        dim: str,
        first: dt.date,
        last: dt.date,
        zone: str,
        teams: Sequence[str] | None = None,
        keep: Sequence[str] = ("day", "value", "team", "status"),
        values: Sequence[str] | None = None,
    ) -> list[DayRow]:
        """Request records of local days ``first``..``last`` of ``zone`` by ``dim``, summed per
        what ``keep`` names of day, value, team and status (the others read the first day,
        ``''``, 0; :mod:`trioproxy.ledger.days`); only ``teams`` and ``values`` if given.
        Reads ``ledger_days`` when it is kept in ``zone``, else folds the hourly roll-up."""
        ...

    async def day_cells(
        self,
        *,
        dim: str,
        first: dt.date,
        last: dt.date,
        zone: str,
        teams: Sequence[str] | None = None,
    ) -> list[DayCells]:
        """What the Spend CSV prints per local day and value of ``dim``, summed in the
        database, ordered by day and value (:mod:`trioproxy.ledger.reads`)."""
        ...

    async def query_minutes(
        self, *, first_minute: int, end_minute: int, teams: Sequence[str] | None = None
    ) -> list[MinuteRow]:
        """Per-minute attempt counters per target (:mod:`trioproxy.ledger.minutes`) for Unix
        minutes in ``[first_minute, end_minute)``, summed over every team or ``teams`` only."""
        ...

    async def recent_requests(
        self,
        filters: Filters,
        *,
        cursor: Cursor | None,
        limit: int,
        since: float,
        until: float,
    ) -> tuple[list[UsageRecord], list[Attempt]]:
        """Request records in ``[since, until)`` matching ``filters``, newest first, older
        than ``cursor``, at most ``limit``; and their attempts (:mod:`trioproxy.ledger.recent`)."""
        ...

    async def oldest_request_ts(self) -> float | None:
        """When the oldest request record kept was made (None: there is none); one index
        entry read. The Requests page offers no window before it."""
        ...

    async def enforce_retention(
        self, *, now: float, retention_days: int | None
    ) -> tuple[int, bool]:
        """Drop raw rows older than ``retention_days`` full days before ``now`` (None: keep
        them); keep rollups, except the per-minute counters past their own
        :data:`~trioproxy.ledger.minutes.KEEP_DAYS`, which go either way.

        Returns the number of partitions (PostgreSQL: all at once) or rows (SQLite: at most
        a bounded batch) removed, and whether more are left for the next call.
        """
        ...

    async def aclose(self) -> None: ...


def model_of(record: UsageRecord) -> str:
    return record.target or record.provider_model or ""


_EPOCH = dt.date(1970, 1, 1)


@functools.lru_cache(maxsize=64)
def _day(n: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=n)


def day_of(ts: float) -> dt.date:
    """The UTC calendar day of a Unix time."""
    return _day(int(ts // 86_400))


RollupKey = tuple[str, str, str, str, str, str, str, str, str, str]
"""(day ISO, kind, team, feature, user, route, model, cache, outcome, error kind or '')."""


@functools.lru_cache(maxsize=64)
def _iso(n: int) -> str:
    return _day(n).isoformat()


def rollup_key(record: UsageRecord) -> RollupKey:
    return (
        _iso(int(record.ts // 86_400)),
        record.kind,
        record.team,
        record.feature,
        record.user,
        record.route,
        model_of(record),
        record.cache,
        record.outcome,
        record.error_kind or "",
    )


_SUMMED = operator.attrgetter(*METRICS[1:])


def aggregate(records: Iterable[UsageRecord]) -> dict[RollupKey, list[int]]:
    """Sum records per rollup key, in :data:`METRICS` order."""
    out: dict[RollupKey, list[int]] = {}
    for r in records:
        acc = out.setdefault(rollup_key(r), [0] * len(METRICS))
        acc[0] += 1
        for i, v in enumerate(_SUMMED(r), 1):
            acc[i] += v
    return out


_DIM_COLUMN = {"user": "user_name"}


def rollup_query(by: Sequence[str], placeholder: str) -> str:
    """The report query over the daily roll-up; parameters: kind, first day, last day."""
    check_dimensions(by)
    cols = ", ".join(_DIM_COLUMN.get(d, d) for d in by)
    p = placeholder
    sums = ", ".join(f"SUM({m})" for m in METRICS)
    return (
        f"SELECT {cols}, {sums} FROM ledger_daily WHERE kind = {p} AND day >= {p} "
        f"AND day <= {p} GROUP BY {cols} ORDER BY {cols}"
    )


def check_dimensions(by: Sequence[str]) -> None:
    bad = [d for d in by if d not in DIMENSIONS]
    if bad or not by:
        raise ValueError(f"report dimensions must be a non-empty subset of {DIMENSIONS}, got {bad}")


def record_from_dict(data: Mapping[str, Any]) -> UsageRecord:
    """Rebuild a record from :meth:`UsageRecord.to_dict`; unknown keys are ignored.

    A record spooled by a version that counted float USD (``cost_usd``, ``saved_usd``) gets
    its µUSD back (rounded)."""
    fields = {k: v for k, v in data.items() if k in _FIELDS}
    for old, new in LEGACY_MONEY.items():
        if new not in fields and isinstance(data.get(old), int | float):
            fields[new] = round(data[old] * 1_000_000)
    return UsageRecord(**fields)


__all__ = [
    "DAILY_KEY",
    "DIMENSIONS",
    "METRICS",
    "REQUEST_TOKENS",
    "LedgerBackend",
    "ReportRow",
    "RequestTotals",
    "RollupKey",
    "aggregate",
    "check_dimensions",
    "day_of",
    "model_of",
    "record_from_dict",
    "rollup_key",
]
