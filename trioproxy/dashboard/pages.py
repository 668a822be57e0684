"""The HTML pages. Each page is ``page.html`` around ``panels/<page>.html``; pages that
show live numbers refresh their panel from ``/panel/<page>`` with htmx. Every form is a
plain POST that works without JavaScript; htmx, when present, swaps the answer in place.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, g, render_template, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.actions import ActionError
from trioproxy.dashboard.budgets import LimitSource, budget_edits, budget_from_form, limit_sources
from trioproxy.dashboard.budgets import edit_budget as apply_budget_edit
from trioproxy.dashboard.cache_page import cache_context, flush_entries
from trioproxy.dashboard.cache_page import delete_entry as delete_cache_entry
from trioproxy.dashboard.edits import EditError, from_form
from trioproxy.dashboard.http_helpers import refuse
from trioproxy.dashboard.limits import (
    WINDOW_FIELDS,
    all_keys,
    edit_window,
    user_teams,
    window_rows,
)
from trioproxy.dashboard.params import row_cursor
from trioproxy.edge.app import Gateway

REFRESH_S = 5
AUDIT_PAGE = 50
AUDIT_SCAN_PAGES = 20
"""Store pages one audit page may read for a principal of some teams (then "Older")."""

Context = Callable[[Gateway, Principal], Awaitable[dict[str, Any]]]


def row_id(team: str) -> str:
    """A safe HTML id for a team's row (team names may hold any character)."""
    return "t-" + hashlib.sha256(team.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class BudgetRow:
    team: str
    id: str
    day: snapshot.Usage
    month: snapshot.Usage
    sources: dict[str, LimitSource] = field(default_factory=dict)
    """Each limit's source (``daily_usd`` / ``monthly_usd``); none without budgets, or while
    the budget store does not answer."""


async def budget_row(
    gw: Gateway, team: str, edits: Sequence[AuditEntry] | None = None
) -> BudgetRow:
    """``edits``: :func:`budget_edits`, when the caller read them for several rows."""
    day, month = await snapshot.team_usage(gw, team)
    if edits is None and snapshot.gate_of(gw) is not None:
        store = gw.keys.source
        edits = await budget_edits(store if isinstance(store, AdminStore) else None)
    sources = await limit_sources(gw, team, edits or [])
    return BudgetRow(team, row_id(team), day, month, sources)


async def overview_context(gw: Gateway, who: Principal) -> dict[str, Any]:
    return {"overview": await snapshot.overview(gw, teams=who.scope)}


async def budgets_context(gw: Gateway, who: Principal) -> dict[str, Any]:
    teams = await snapshot.all_teams(gw, who.scope)
    gate = snapshot.gate_of(gw)
    store = gw.keys.source
    edits = await budget_edits(store if isinstance(store, AdminStore) else None)
    windows = (
        await window_rows(gw, store, who) if gate is not None and isinstance(store, AdminStore)
        else []
    )  # fmt: skip
    return {
        "rows": [await budget_row(gw, t, edits) for t in teams],
        "windows": windows,
        "timezone": gw.settings.budgets.timezone,
        "limits_ttl_s": gate.limits_ttl_s if gate is not None else None,
    }


async def providers_context(gw: Gateway, who: Principal) -> dict[str, Any]:
    return {
        "providers": await snapshot.providers(gw),
        "failure_threshold": gw.settings.breaker.failure_threshold,
        "traffic": await snapshot.traffic(gw, time.time(), who.scope),
        "ledger": snapshot.ledger_of(gw) is not None,
    }


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    context: Context
    live: bool
    """Refreshes its panel every ``REFRESH_S`` (pages with forms being edited do not)."""


PAGES: dict[str, Page] = {
    "overview": Page("Overview", overview_context, True),
    "budgets": Page("Budgets", budgets_context, False),
    "spend": Page("Spend", lambda gw, who: _nothing(), False),
    "keys": Page("Keys", lambda gw, who: _nothing(), False),
    "providers": Page("Providers", providers_context, True),
    "cache": Page("Cache", cache_context, True),
    "audit": Page("Audit log", lambda gw, who: _nothing(), False),
    "requests": Page("Requests", lambda gw, who: _nothing(), False),
    "alerts": Page("Alerts", lambda gw, who: _nothing(), False),
    "users": Page("Users", lambda gw, who: _nothing(), False),
}


OWN_ROUTES = frozenset({"audit", "spend", "keys", "users", "alerts", "requests"})
"""Pages with their own route (query arguments), not the generic ``/<page>`` one."""


async def _nothing() -> dict[str, Any]:
    return {}


def install(app: Quart, acc: Access) -> None:
    gw = acc.gw

    async def render(page: str, *, panel: bool, status: int = 200, **extra: Any) -> Any:
        spec = PAGES[page]
        values = await spec.context(gw, g.principal)
        template = "fragments/panel.html" if panel else "page.html"
        html = await render_template(
            template, page=page, spec=spec, title=spec.title, pages=PAGES,
            refresh_s=REFRESH_S, **values, **extra,
        )  # fmt: skip
        return html, status

    @app.get("/")
    async def home() -> ResponseReturnValue:
        return await render("overview", panel=False)

    @app.get("/<page>")
    async def page_view(page: str) -> ResponseReturnValue:
        if page not in PAGES or page in OWN_ROUTES:
            raise NotFound()
        return await render(page, panel=False)

    @app.get("/panel/<page>")
    async def panel_view(page: str) -> ResponseReturnValue:
        if page not in PAGES or page in OWN_ROUTES:
            raise NotFound()
        return await render(page, panel=True)

    # --- budgets --------------------------------------------------------------------

    async def row_answer(team: str, status: int, **message: Any) -> ResponseReturnValue:
        row = await budget_row(gw, team)
        if request.headers.get("HX-Request") == "true":
            html = await render_template("fragments/budget_row.html", r=row, msg=message)
            return html, status
        return await render("budgets", panel=False, status=status, msg_for=team, msg=message)

    async def edit(team: str) -> ResponseReturnValue:
        form = await request.form
        known = set(await snapshot.all_teams(gw))
        if team not in known or not g.principal.may_see(team):
            return await render(
                "budgets", panel=False, status=404, page_error=f"Unknown team {team!r}."
            )
        try:
            changes = budget_from_form(form)
            warnings = await apply_budget_edit(gw, acc.store, g.principal, team, changes,
                                               known=known, now=acc.clock())  # fmt: skip
        except EditError as err:
            return await row_answer(team, 400, fields=err.fields, values=dict(form))
        except ActionError as err:  # what was typed stays in the fields
            return await row_answer(team, err.status, error=err.message, values=dict(form))
        if warnings:
            return await row_answer(team, 200, notice="Saved.", warning="; ".join(warnings))
        return await row_answer(team, 200, notice="Saved.")

    @app.post("/budgets/<path:team>")
    async def edit_budget(team: str) -> ResponseReturnValue:
        return await edit(team)

    @app.post("/budgets")
    async def edit_budget_form() -> ResponseReturnValue:
        return await edit((await request.form).get("team", "").strip())

    @app.get("/budgets/row/<path:team>")
    async def budget_row_view(team: str) -> ResponseReturnValue:
        if team not in await snapshot.all_teams(gw) or not g.principal.may_see(team):
            raise NotFound()
        return await render_template(
            "fragments/budget_row.html", r=await budget_row(gw, team), msg={}
        )

    # --- token windows per user (on the budgets page) -------------------------------

    async def window_answer(user: str, status: int, **message: Any) -> ResponseReturnValue:
        return await render("budgets", panel=False, status=status, msg_for_user=user, msg=message)

    @app.post("/windows/<path:user>")
    async def edit_user_window(user: str) -> ResponseReturnValue:
        form = await request.form
        try:
            changes = from_form(form, WINDOW_FIELDS)
            await edit_window(gw, acc.store, g.principal, user, changes, now=acc.clock())
        except EditError as err:
            return await window_answer(user, 400, fields=err.fields, values=dict(form))
        except ActionError as err:
            if err.status in (403, 404):  # no row of this user on the page to say it next to
                return await render("budgets", panel=False, status=err.status,
                                    page_error=err.message)  # fmt: skip
            return await window_answer(user, err.status, error=err.message)
        return await window_answer(user, 200, notice="Saved.")

    # --- audit ----------------------------------------------------------------------

    async def audit_teams(who: Principal) -> Callable[[AuditEntry], bool]:
        """Which entries ``who`` may read: all for a principal of every team; else those of
        its teams' budgets, caches, keys and users (a user's when all their keys are in its
        teams), none of users, breakers or cache entries, which are every team's."""
        teams = who.teams
        if teams is None:
            return lambda e: True
        key_team = {k.name: k.team for k in await all_keys(gw, acc.store)}
        users = await user_teams(gw, acc.store)

        def of(e: AuditEntry) -> set[str]:
            kind = e.action.split(".", 1)[0]
            if kind == "budget":
                return {e.target}
            if e.action == "cache.flush":
                return {e.target.split("/", 1)[0]}
            if kind == "key":
                return {key_team[e.target]} if e.target in key_team else set()
            if kind == "window":
                return users.get(e.target, set())
            return set()

        return lambda e: bool(found := of(e)) and found <= teams

    @app.get("/audit")
    async def audit_view() -> ResponseReturnValue:
        before = row_cursor(request.args.get("before"))
        action = request.args.get("action", "").strip() or None
        shown = await audit_teams(g.principal)
        entries: list[AuditEntry] = []
        for _ in range(AUDIT_SCAN_PAGES):  # a team's entries among every team's: a bounded walk
            batch = await acc.store.audit_log(
                limit=AUDIT_PAGE + 1, before_seq=before, action=action
            )
            entries += [e for e in batch if shown(e)]
            if len(entries) > AUDIT_PAGE or len(batch) <= AUDIT_PAGE:
                break
            before = batch[-1].seq
        more = len(entries) > AUDIT_PAGE
        return await render(
            "audit", panel=False, entries=entries[:AUDIT_PAGE], more=more, action=action or "",
            tz=snapshot.zone(gw),
        )  # fmt: skip

    # --- providers ------------------------------------------------------------------

    @app.post("/providers/<path:target>/reset")
    async def reset_breaker(target: str) -> ResponseReturnValue:
        if target not in gw.settings.models:
            raise NotFound()
        if not g.principal.every_team:  # a target's breaker routes every team's requests
            return await refuse(403, "A breaker is every team's: an admin of every team "
                                "resets it.")  # fmt: skip
        before = next(r for r in (await snapshot.providers(gw)).rows if r.target == target)
        await gw.breakers.reset(target)
        await acc.store.audit(AuditEntry(acc.clock(), g.principal.name, "breaker.reset", target,
                                         f"{before.state}, {before.failures} failures",
                                         "closed"))  # fmt: skip
        notice = f"Breaker of {target!r} reset: closed."
        if request.headers.get("HX-Request") == "true":
            return await render("providers", panel=True, notice=notice)
        return await render("providers", panel=False, notice=notice)

    # --- cache ----------------------------------------------------------------------

    @app.post("/cache/flush")
    async def flush() -> ResponseReturnValue:
        form = await request.form
        try:
            result = await flush_entries(gw, acc.store, g.principal, form.get("team", "").strip(),
                                         form.get("route", ""), acc.clock())  # fmt: skip
        except ActionError as err:
            html = await render_template("fragments/flush.html", error=err.message)
            if request.headers.get("HX-Request") != "true":
                return await render("cache", panel=False, status=err.status, flush_html=html)
            return html, err.status
        html = await render_template("fragments/flush.html", result=result)
        if request.headers.get("HX-Request") != "true":
            return await render("cache", panel=False, flush_html=html)
        return html

    @app.post("/cache/delete")
    async def delete_entry() -> ResponseReturnValue:
        """One entry, named by a hit's ``x-trioproxy-cache-entry`` header (a bad answer)."""
        entry = (await request.form).get("entry", "").strip()
        try:
            deleted = await delete_cache_entry(gw, acc.store, g.principal, entry, acc.clock())
        except ActionError as err:
            error, status = err.message, err.status
        else:
            text = "Deleted: the next identical request goes upstream." if deleted else (
                "No such entry (expired, evicted or already deleted)." if deleted is False else
                "Sent to every worker: each drops the entry within about a second."
            )  # fmt: skip
            html = await render_template("fragments/flush.html", message=text)
            if request.headers.get("HX-Request") != "true":
                return await render("cache", panel=False, flush_html=html)
            return html
        html = await render_template("fragments/flush.html", error=error, field="entry")
        if request.headers.get("HX-Request") != "true":
            return await render("cache", panel=False, status=status, flush_html=html,
                                entry_error=error, entry_value=entry)  # fmt: skip
        return html, status


__all__ = ["PAGES", "REFRESH_S", "install", "row_id"]
