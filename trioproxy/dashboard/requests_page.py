"""The Requests page: ``/requests?team=&key=&route=&endpoint=&status=&cache=&window=24h&before=``,
and the same rows as CSV (``/requests.csv``, same query: the page's rows, :data:`PAGE`).

The most recent request records, newest first, :data:`PAGE` at a time, from the ledger's
bounded keyset query (:mod:`trioproxy.ledger.recent`: an index walk over at most one time
window, never a scan). ``before`` is the cursor of the last row shown (``<ts>~<request id>``);
the window ends there. Every filter is a plain GET form; a wrong value is a 400 next to its
field. A user limited to some teams sees only theirs (one team at a time).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from quart import Quart, Response, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.sessions import Principal
from trioproxy.core import endpoints
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.spend import csv_cell
from trioproxy.ledger.recent import WINDOWS_S, Attempt, Cursor, Filters
from trioproxy.ledger.record import UsageRecord

PAGE = 50
DEFAULT_WINDOW = "24h"
CACHE_STATUSES = ("off", "miss", "bypass", "exact", "semantic")
MAX_FIELD = 200


@dataclass
class Query:
    filters: Filters
    window: str
    cursor: Cursor | None
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    """What was sent, to show back in the form."""


MAX_TS = 32_503_680_000.0
"""Year 3000: a cursor's time stamp past this is no cursor."""


def _cursor(raw: str) -> Cursor | None:
    ts, sep, rid = raw.partition("~")
    try:
        value = float(ts)
    except ValueError:
        return None
    ok = sep and math.isfinite(value) and 0 <= value < MAX_TS  # (a timestamp: 1e300 was a 500)
    return Cursor(value, rid) if ok else None


def parse(args: Mapping[str, str], who: Principal, visible: list[str]) -> Query:
    """The filters of the query string; what is wrong is in ``errors`` (by field)."""
    values = {k: args.get(k, "").strip() for k in
              ("team", "key", "route", "endpoint", "status", "cache", "window",
               "before")}  # fmt: skip
    errors: dict[str, str] = {}
    for name, value in values.items():
        if len(value) > MAX_FIELD:
            errors[name] = f"at most {MAX_FIELD} characters"
    status = None
    if values["status"]:
        if values["status"].isdigit() and 100 <= int(values["status"]) <= 599:
            status = int(values["status"])
        else:
            errors["status"] = "an HTTP status, 100 to 599"
    if values["cache"] and values["cache"] not in CACHE_STATUSES:
        errors["cache"] = f"one of {', '.join(CACHE_STATUSES)}"
    if values["endpoint"] and values["endpoint"] not in endpoints.ALL:
        errors["endpoint"] = f"one of {', '.join(endpoints.ALL)}"
    window = values["window"] or DEFAULT_WINDOW
    if window not in WINDOWS_S:
        errors["window"] = f"one of {', '.join(WINDOWS_S)}"
        window = DEFAULT_WINDOW
    cursor = None
    if values["before"]:
        cursor = _cursor(values["before"])
        if cursor is None:
            errors["before"] = "not a position in the list: start again from the newest"
    team = values["team"] or None
    if who.teams is not None:
        if team is None and visible:
            team = values["team"] = visible[0]
        if team not in who.teams:
            errors["team"] = "not a team you can see"
    filters = Filters(team=team, key=values["key"] or None, route=values["route"] or None,
                      status=status, cache=values["cache"] or None,
                      endpoint=values["endpoint"] or None)  # fmt: skip
    return Query(filters, window, cursor, errors, values)


@dataclass(frozen=True, slots=True)
class Row:
    record: UsageRecord
    attempts: list[Attempt]

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.record.ts, self.record.request_id)


def next_link(query: Query, cursor: Cursor) -> str:
    """The same filters from ``cursor`` on (older rows only)."""
    params = {k: v for k, v in query.values.items() if v and k != "before"}
    params["before"] = f"{cursor.ts!r}~{cursor.request_id}"
    return "/requests?" + urlencode(params)


CSV_HEADER = (
    "time_utc", "request_id", "endpoint", "team", "key", "user", "feature", "route", "target",
    "status", "error_kind", "outcome", "cache", "stream", "input_tokens", "cache_read_tokens",
    "cache_write_tokens", "output_tokens", "reasoning_tokens", "estimated", "cost_usd",
    "latency_ms", "ttfb_ms", "attempts",
)  # fmt: skip


def to_csv(rows: list[Row]) -> str:
    """The page's rows, one CSV line each (text cells never read as formulas)."""
    lines = [",".join(CSV_HEADER) + "\n"]
    for row in rows:
        r = row.record
        when = dt.datetime.fromtimestamp(r.ts, dt.UTC).isoformat(timespec="milliseconds")
        text = [csv_cell(v or "") for v in (r.request_id, r.endpoint, r.team, r.key_name, r.user,
                                             r.feature, r.route, r.target, str(r.status),
                                             r.error_kind, r.outcome, r.cache)]  # fmt: skip
        ttfb = "" if r.ttfb_ms is None else f"{r.ttfb_ms:.1f}"
        writes = r.cache_write_5m_tokens + r.cache_write_1h_tokens
        lines.append(",".join([
            when, *text, str(int(r.stream)), str(r.input_tokens), str(r.cache_read_tokens),
            str(writes), str(r.output_tokens), str(r.reasoning_tokens), str(int(r.estimated)),
            f"{r.cost_micros / 1e6:.6f}", f"{r.latency_ms:.1f}", ttfb, str(len(row.attempts)),
        ]) + "\n")  # fmt: skip
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class Found:
    """One page of the list: its rows, whether older ones follow, the window searched."""

    rows: list[Row]
    more: bool
    since: float
    until: float


async def find(gw: Any, query: Query) -> Found:
    """The page ``query`` asks for (nothing when its filters are wrong or there is no ledger)."""
    backend = snapshot.ledger_of(gw)
    rows: list[Row] = []
    more = False
    until = query.cursor.ts if query.cursor is not None else time.time() + 1
    since = until - WINDOWS_S[query.window]
    if backend is not None and not query.errors:
        found, attempts = await backend.recent_requests(
            query.filters, cursor=query.cursor, limit=PAGE + 1, since=since, until=until
        )
        by_request: dict[str, list[Attempt]] = {}
        for a in attempts:
            by_request.setdefault(a.request_id, []).append(a)
        more = len(found) > PAGE
        rows = [Row(r, by_request.get(r.request_id, [])) for r in found[:PAGE]]
    return Found(rows, more, since, until)


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw

    async def query_of() -> tuple[Query, list[str]]:
        who: Principal = g.principal
        teams = await snapshot.all_teams(gw, who.scope)
        return parse(request.args, who, teams), teams

    @app.get("/requests.csv")
    async def requests_csv() -> ResponseReturnValue:
        query, _ = await query_of()
        if query.errors:
            wrong = "; ".join(f"{k}: {v}" for k, v in query.errors.items())
            return Response(wrong, status=400, content_type="text/plain; charset=utf-8")
        found = await find(gw, query)
        return Response(
            to_csv(found.rows), content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="requests.csv"'},
        )  # fmt: skip

    @app.get("/requests")
    async def requests_view() -> ResponseReturnValue:
        query, teams = await query_of()
        backend = snapshot.ledger_of(gw)
        found = await find(gw, query)
        rows, more, since, until = found.rows, found.more, found.since, found.until
        earlier = None
        if more:
            earlier = next_link(query, rows[-1].cursor)
        elif backend is not None and not query.errors:  # this window is done: the one before,
            oldest = await backend.oldest_request_ts()  # if the ledger reaches back that far
            if oldest is not None and oldest < since:
                earlier = next_link(query, Cursor(since, ""))
        html = await render_template(
            "page.html", page="requests", spec=pages["requests"], title=pages["requests"].title,
            pages=pages, rows=rows, query=query, teams=teams, windows=list(WINDOWS_S),
            cache_statuses=CACHE_STATUSES, endpoints=endpoints.ALL, earlier=earlier, more=more,
            since=since, csv_link="/requests.csv?" + urlencode(
                {k: v for k, v in query.values.items() if v}),
            until=until, tz=snapshot.zone(gw), ledger=backend is not None,
            log_prompts=gw.settings.telemetry.log_prompts,
        )  # fmt: skip
        return html, 400 if query.errors else 200


__all__ = ["CACHE_STATUSES", "CSV_HEADER", "PAGE", "Found", "Query", "Row", "find", "install",
           "parse", "to_csv"]  # fmt: skip
