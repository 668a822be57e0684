"""The Alerts page: budget alerts fired and their webhook deliveries (status, attempts, last
error), newest first, from the admin store.

:class:`AlertLog` is the budget alert sink's history (``AlertSink.history``): it records
each alert as it fires and its delivery when the webhook is done. The admin store is one
SQLite file per host: with several hosts, each lists the alerts it fired (an alert fires
on one host only: the shared store deduplicates them).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import Quart, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.store import AdminStore, StoreError
from trioproxy.budget.alerts import Alert, Delivery
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.pages import REFRESH_S

log = logging.getLogger(__name__)
PAGE = 50


class AlertLog:
    """``AlertHistory`` over the admin store; a failed write is logged, never raised."""

    def __init__(self, store: AdminStore) -> None:
        self.store = store

    async def alert_fired(self, alert: Alert, delivery: Delivery) -> int | None:
        try:
            return await self.store.record_alert(
                alert.at, alert.team, alert.budget, alert.level, alert.threshold,
                round(alert.spent_usd * 1e6), round(alert.limit_usd * 1e6), delivery,
            )  # fmt: skip
        except (StoreError, trio.TooSlowError) as exc:
            log.warning("alert of %s not recorded: %s", alert.budget, exc)
            return None

    async def delivery_done(
        self, ref: int, delivery: Delivery, attempts: int, last_error: str | None, at: float
    ) -> None:
        try:
            await self.store.alert_delivered(ref, delivery, attempts, last_error, at)
        except (StoreError, trio.TooSlowError) as exc:
            log.warning("delivery of alert %d not recorded: %s", ref, exc)


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw
    gate = snapshot.gate_of(gw)
    if gate is not None and gate.alerts is not None:
        gate.alerts.history = AlertLog(acc.store)

    async def context() -> dict[str, Any]:
        who = g.principal
        before = request.args.get("before", type=int)
        team = request.args.get("team", "").strip() or None
        records = await acc.store.alert_log(
            limit=PAGE + 1, before_id=before, teams=who.teams, team=team
        )
        return {
            "records": records[:PAGE], "more": len(records) > PAGE, "team": team or "",
            "stats": snapshot.alert_statistics(snapshot.gate_of(gw)), "tz": snapshot.zone(gw),
            "before": before,
        }  # fmt: skip

    @app.get("/alerts")
    async def alerts_view() -> ResponseReturnValue:
        teams = [t for t in await snapshot.all_teams(gw) if g.principal.may_see(t)]
        return await render_template(
            "page.html", page="alerts", spec=pages["alerts"], title=pages["alerts"].title,
            pages=pages, teams=teams, webhook=gw.settings.budgets.webhook_url is not None,
            refresh_s=REFRESH_S, **await context(),
        )  # fmt: skip

    @app.get("/panel/alerts")
    async def alerts_panel() -> ResponseReturnValue:
        """The list alone, for the page's refresh (a poll: it does not extend the session)."""
        return await render_template("fragments/alert_list.html", **await context())


__all__ = ["AlertLog", "install"]
