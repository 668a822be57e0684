"""The server-rendered pages. Each page is a frame around a panel that htmx
re-fetches every few seconds from ``/panel/<page>``; forms post with htmx and
get the refreshed panel (or a result fragment) back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart, render_template, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from trioproxy.dashboard import snapshot
from trioproxy.dashboard.actions import ActionError, flush_cache, set_limits
from trioproxy.edge.app import Gateway

REFRESH_S = 5
CACHE_WINDOW_DAYS = 7

Context = Callable[[Gateway], Awaitable[dict[str, Any]]]


async def overview_context(gw: Gateway) -> dict[str, Any]:
    return {"overview": await snapshot.overview(gw)}


async def budgets_context(gw: Gateway) -> dict[str, Any]:
    teams = []
    for team in snapshot.known_teams(gw):
        day, month = await snapshot.team_usage(gw, team)
        teams.append({"team": team, "day": day, "month": month})
    return {"teams": teams, "timezone": gw.settings.budgets.timezone}


async def providers_context(gw: Gateway) -> dict[str, Any]:
    return {"providers": snapshot.providers(gw)}


async def cache_context(gw: Gateway) -> dict[str, Any]:
    since = snapshot.utc_day_start(dt.datetime.now(dt.UTC)) - dt.timedelta(
        days=CACHE_WINDOW_DAYS - 1
    )
    cache = gw.cache
    semantic = cache.semantic.stats if cache is not None and cache.semantic is not None else None
    exact_stats = getattr(cache.exact, "statistics", None) if cache is not None else None
    return {
        "enabled": cache is not None,
        "rows": await snapshot.cache_rows(gw, since),
        "window_days": CACHE_WINDOW_DAYS,
        "ledger": snapshot.ledger_of(gw) is not None,
        "semantic": semantic,
        "writer": cache.writer.statistics() if cache is not None else None,
        "exact": exact_stats() if callable(exact_stats) else None,
        "routes": snapshot.cached_routes(gw),
        "teams": snapshot.known_teams(gw),
    }


PAGES: dict[str, tuple[str, Context]] = {
    "overview": ("Overview", overview_context),
    "budgets": ("Budgets", budgets_context),
    "providers": ("Providers", providers_context),
    "cache": ("Cache", cache_context),
}


def install(app: Quart, gw: Gateway) -> None:
    async def render(page: str, *, panel: bool, **extra: Any) -> str:
        title, context = PAGES[page]
        values = await context(gw)
        template = f"panels/{page}.html" if panel else "page.html"
        return await render_template(
            template, page=page, title=title, pages=PAGES, refresh_s=REFRESH_S, **values, **extra
        )

    @app.get("/")
    async def home() -> ResponseReturnValue:
        return await render("overview", panel=False)

    @app.get("/<page>")
    async def page_view(page: str) -> ResponseReturnValue:
        if page not in PAGES:
            raise NotFound()
        return await render(page, panel=False)

    @app.get("/panel/<page>")
    async def panel_view(page: str) -> ResponseReturnValue:
        if page not in PAGES:
            raise NotFound()
        return await render(page, panel=True)

    @app.post("/budgets")
    async def edit_budget() -> ResponseReturnValue:
        form = await request.form
        team = form.get("team", "").strip()
        try:
            await set_limits(gw, team, form.get("daily_usd"), form.get("monthly_usd"))
        except ActionError as err:
            return await render("budgets", panel=True, error=err.message), err.status
        return await render("budgets", panel=True, notice=f"Limits of {team!r} saved.")

    @app.post("/cache/flush")
    async def flush() -> ResponseReturnValue:
        form = await request.form
        try:
            result = await flush_cache(gw, form.get("team", ""), form.get("route", ""))
        except ActionError as err:
            return await render_template("fragments/flush.html", error=err.message), err.status
        return await render_template("fragments/flush.html", result=result)


__all__ = ["PAGES", "REFRESH_S", "install"]
