"""The most recent request records, filtered, one bounded page at a time (the Requests page).

Reads ``ledger_raw`` itself, but never scans it: every query is

* on the partial index ``ledger_raw_req_ts`` (``ts, request_id`` of request rows), or the
  filter's own when a team, a key or a failed status is chosen (:data:`INDEXES`), newest
  first;
* bounded in time: ``[until - window, until)`` (:data:`WINDOWS_S`), so a filter that matches
  nothing walks at most one window of request rows, never the whole ledger;
* keyset-paginated on ``(ts, request_id)`` (the cursor is the last row shown), never OFFSET;
* ``LIMIT``-ed to one page (+1 to know whether there is more).

The attempts of the requests on a page come from the unique key's index (``request_id``
first). Prompts and answers are not in the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trioproxy.ledger.columns import COLUMNS

FAILED = 400
"""A status from here on is a failure (:data:`INDEXES`: its own partial index)."""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS ledger_raw_req_ts ON ledger_raw (ts, request_id) "
    "WHERE kind = 'request'",
    "CREATE INDEX IF NOT EXISTS ledger_raw_req_team ON ledger_raw (team, ts, request_id) "
    "WHERE kind = 'request'",
    "CREATE INDEX IF NOT EXISTS ledger_raw_req_key ON ledger_raw (key_name, ts, request_id) "
    "WHERE kind = 'request'",
    f"CREATE INDEX IF NOT EXISTS ledger_raw_req_failed ON ledger_raw (status, ts, request_id) "
    f"WHERE kind = 'request' AND status >= {FAILED}",
)
"""A filter on team or key (an app: often rare among the rows of a window) walks only its own
rows; so does one on a failed status (rare by nature; the index holds only those rows, so a
served request never writes it). Route, cache and endpoint have few values, each common: a
page of them is found after a short walk of the time index."""
WINDOWS_S: dict[str, int] = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400}
"""The time spans one page may search (the largest bounds the walk of a filter)."""
MAX_PAGE = 200
ATTEMPT_SPAN_S = 86_400.0
"""Attempts start after their request and within this (it bounds the partitions read)."""


@dataclass(frozen=True, slots=True)
class Filters:
    team: str | None = None
    key: str | None = None
    route: str | None = None
    status: int | None = None
    cache: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row shown: the next page starts strictly older than it."""

    ts: float
    request_id: str


@dataclass(frozen=True, slots=True)
class Attempt:
    request_id: str
    attempt: int
    target: str
    role: str
    outcome: str
    status: int
    error_kind: str
    latency_ms: float
    ttfb_ms: float | None


_FILTER_COLUMNS = {"team": "team", "key": "key_name", "route": "route", "status": "status",
                   "cache": "cache", "endpoint": "endpoint"}  # fmt: skip


def page_sql(
    filters: Filters,
    *,
    cursor: Cursor | None,
    limit: int,
    since: float,
    until: float,
    param: str,
    ts_param: str,
    ts_select: str,
) -> tuple[str, list[object]]:
    """The page query and its parameters; ``ts_param`` wraps a Unix-time parameter and
    ``ts_select`` reads ``ts`` as Unix time (each backend's spelling)."""
    where = ["kind = 'request'", f"ts >= {ts_param}", f"ts < {ts_param}"]
    params: list[object] = [since, until]
    if cursor is not None:
        where.append(f"(ts < {ts_param} OR (ts = {ts_param} AND request_id < {param}))")
        params += [cursor.ts, cursor.ts, cursor.request_id]
    for name, column in _FILTER_COLUMNS.items():
        value = getattr(filters, name)
        if value is not None:
            where.append(f"{column} = {param}")
            params.append(value)
    if filters.status is not None and filters.status >= FAILED:
        where.append(f"status >= {FAILED}")  # as written: the failed rows' index applies
    cols = ", ".join(ts_select if c == "ts" else c for c in COLUMNS)
    sql = (
        f"SELECT {cols} FROM ledger_raw WHERE {' AND '.join(where)} "
        f"ORDER BY ts DESC, request_id DESC LIMIT {int(limit)}"
    )
    return sql, params


def oldest_sql(ts_select: str) -> str:
    """The oldest request record's time: the first entry of ``ledger_raw_req_ts``."""
    return (
        f"SELECT {ts_select} FROM ledger_raw WHERE kind = 'request' ORDER BY ts, request_id LIMIT 1"
    )


def attempts_sql(n: int, *, param: str, ts_param: str) -> str:
    """Parameters: the lowest request ts, the highest + :data:`ATTEMPT_SPAN_S`, ``n`` ids."""
    ids = ", ".join([param] * n)
    return (
        "SELECT request_id, attempt, target, COALESCE(hedge_role, ''), outcome, status, "
        "COALESCE(error_kind, ''), latency_ms, ttfb_ms FROM ledger_raw "
        f"WHERE kind = 'attempt' AND ts >= {ts_param} AND ts < {ts_param} "
        f"AND request_id IN ({ids}) ORDER BY request_id, attempt"
    )


def attempts_of(raw: Sequence[Sequence[object]]) -> list[Attempt]:
    return [
        Attempt(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]),  # type: ignore[call-overload]
                str(r[6]), float(r[7] or 0.0),  # type: ignore[arg-type]
                None if r[8] is None else float(r[8]))  # type: ignore[arg-type]
        for r in raw
    ]  # fmt: skip


__all__ = [
    "ATTEMPT_SPAN_S",
    "INDEXES",
    "MAX_PAGE",
    "WINDOWS_S",
    "Attempt",
    "Cursor",
    "Filters",
    "attempts_of",
    "attempts_sql",
    "page_sql",
]
