"""The Requests page: ``/requests?team=&key=&route=&status=&cache=&window=24h&before=``.

The most recent request records, newest first, :data:`PAGE` at a time, from the ledger's
bounded keyset query (:mod:`trioproxy.ledger.recent`: an index walk over at most one time
window, never a scan). ``before`` is the cursor of the last row shown (``<ts>~<request id>``);
the window ends there. Every filter is a plain GET form; a wrong value is a 400 next to its
field. A user limited to some teams sees only theirs (one team at a time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from quart import Quart, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.sessions import Principal
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
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


def _cursor(raw: str) -> Cursor | None:
    ts, sep, rid = raw.partition("~")
    try:
        value = float(ts)
    except ValueError:
        return None
    return Cursor(value, rid) if sep and math.isfinite(value) else None


def parse(args: Mapping[str, str], who: Principal, visible: list[str]) -> Query:
    """The filters of the query string; what is wrong is in ``errors`` (by field)."""
    values = {k: args.get(k, "").strip() for k in
              ("team", "key", "route", "status", "cache", "window", "before")}  # fmt: skip
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
                      status=status, cache=values["cache"] or None)  # fmt: skip
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


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw

    @app.get("/requests")
    async def requests_view() -> ResponseReturnValue:
        who: Principal = g.principal
        teams = [t for t in await snapshot.all_teams(gw) if who.may_see(t)]
        query = parse(request.args, who, teams)
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
        earlier = None
        if more:
            earlier = next_link(query, rows[-1].cursor)
        elif backend is not None and not query.errors:  # this window is done: the one before
            earlier = next_link(query, Cursor(since, ""))
        html = await render_template(
            "page.html", page="requests", spec=pages["requests"], title=pages["requests"].title,
            pages=pages, rows=rows, query=query, teams=teams, windows=list(WINDOWS_S),
            cache_statuses=CACHE_STATUSES, earlier=earlier, more=more, since=since,
            until=until, tz=snapshot.zone(gw), ledger=backend is not None,
            log_prompts=gw.settings.telemetry.log_prompts,
        )  # fmt: skip
        return html, 400 if query.errors else 200


__all__ = ["CACHE_STATUSES", "PAGE", "Query", "Row", "install", "parse"]
