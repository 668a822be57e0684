"""The Spend page and its CSV export: ``/spend?by=team&start=YYYY-MM-DD&end=YYYY-MM-DD``.

Reads only the day roll-up by the chosen dimension (:mod:`trioproxy.ledger.days`: one indexed
range of ~days x values rows; never the raw ledger) and the budget store (monthly limits for
the projections).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from quart import Quart, Response, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.sessions import Principal
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.charts import colour, stacked_bars
from trioproxy.dashboard.spend import (
    BY,
    RangeError,
    Spend,
    parse_range,
    project,
    to_csv,
)
from trioproxy.edge.app import Gateway
from trioproxy.ledger.days import DayRow


async def spend_of(
    gw: Gateway, who: Principal, args: Any, *, every_value: bool = False
) -> tuple[Spend, str | None]:
    """The page's sums: totals per value, per day for the chart's values and per day in all,
    outcomes per team (four grouped reads); ``every_value``: per day for every value (CSV)."""
    tz = snapshot.zone(gw)
    today = dt.datetime.now(tz).date()
    by = args.get("by", "team")
    error = None
    if by not in BY:
        by, error = "team", f"cannot group by {by!r}"
    try:
        rng = parse_range(args.get("start") or None, args.get("end") or None, today)
    except RangeError as err:
        rng, error = parse_range(None, None, today), str(err)
    teams = who.scope

    async def read(
        dim: str, keep: tuple[str, ...], values: list[str] | None = None
    ) -> list[DayRow]:
        return await snapshot.days(gw, dim, rng.start, rng.end, teams, keep, values)

    spend = Spend(rng, by, rng.days)
    if every_value:  # the CSV: per day and value, nothing else
        spend.cells = await snapshot.day_cells(gw, by, rng.start, rng.end, teams)
        return spend, error
    spend.add_values(await read(by, ("value",)))
    spend.add_days(await read(by, ("day", "value"), spend.top()))
    spend.add_day_totals(await read(by, ("day",)))
    spend.add_outcomes(await read("team", ("value", "status")))
    return spend, error


async def projections(gw: Gateway, who: Principal) -> list[Any]:
    tz = snapshot.zone(gw)
    now = dt.datetime.now(tz)
    rows = await snapshot.days(gw, "team", now.date().replace(day=1), now.date(), who.scope,
                               ("value",))  # fmt: skip
    mtd = {r.value: r.cost_usd for r in rows}
    limits: dict[str, float | None] = {}
    for team in await snapshot.all_teams(gw, who.scope):
        limits[team] = await snapshot.monthly_limit_usd(gw, team)
    return project(mtd, limits, now)


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw

    @app.get("/spend")
    async def spend_view() -> ResponseReturnValue:
        spend, error = await spend_of(gw, g.principal, request.args)
        series = spend.series()
        chart = stacked_bars(spend.days, series, label=f"Daily spend by {spend.by}")
        legend = [(name, colour(i, name)) for i, name in enumerate(series)]
        html = await render_template(
            "page.html", page="spend", spec=pages["spend"], title=pages["spend"].title,
            pages=pages, spend=spend, chart=chart, legend=legend, form_error=error,
            by_choices=BY, tz=snapshot.zone(gw), projections=await projections(gw, g.principal),
            ledger=snapshot.ledger_of(gw) is not None, query=request.query_string.decode(),
        )  # fmt: skip
        return html, 400 if error else 200

    @app.get("/spend.csv")
    async def spend_csv() -> ResponseReturnValue:
        spend, error = await spend_of(gw, g.principal, request.args, every_value=True)
        if error:
            return Response(error, status=400, content_type="text/plain; charset=utf-8")
        name = f"spend-by-{spend.by}-{spend.range.start}-{spend.range.end}.csv"
        return Response(
            to_csv(spend), content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )  # fmt: skip


__all__ = ["install"]
