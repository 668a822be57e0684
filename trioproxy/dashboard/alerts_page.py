"""The Alerts page: budget alerts fired and their webhook deliveries (status, attempts, last
error), newest first, from the admin store.

The alerts are recorded by :class:`trioproxy.dashboard.wiring.AlertLog` in the process that
fires them (a data-plane worker). The admin store is one SQLite file per host: with several hosts, each lists the alerts it fired (an alert fires
on one host only: the shared store deduplicates them).
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.pages import REFRESH_S
from trioproxy.dashboard.params import row_cursor

log = logging.getLogger(__name__)
PAGE = 50


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw

    async def context() -> dict[str, Any]:
        who = g.principal
        before = row_cursor(request.args.get("before"))
        team = request.args.get("team", "").strip() or None
        records = await acc.store.alert_log(
            limit=PAGE + 1, before_id=before, teams=who.teams, team=team
        )
        return {
            "records": records[:PAGE], "more": len(records) > PAGE, "team": team or "",
            "stats": await snapshot.alert_statistics(gw) if who.every_team else None,
            "tz": snapshot.zone(gw),
            "before": before,
        }  # fmt: skip

    @app.get("/alerts")
    async def alerts_view() -> ResponseReturnValue:
        teams = await snapshot.all_teams(gw, g.principal.scope)
        return await render_template(
            "page.html", page="alerts", spec=pages["alerts"], title=pages["alerts"].title,
            pages=pages, teams=teams, webhook=gw.settings.budgets.webhook_url is not None,
            refresh_s=REFRESH_S, **await context(),
        )  # fmt: skip

    @app.get("/panel/alerts")
    async def alerts_panel() -> ResponseReturnValue:
        """The list alone, for the page's refresh (a poll: it does not extend the session)."""
        return await render_template("fragments/alert_list.html", **await context())


__all__ = ["install"]
