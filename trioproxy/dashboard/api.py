"""The JSON admin API under ``/admin/api/`` (admin keys only; see :mod:`.access`).

* ``GET /admin/api/budgets/<team>``: limits, spend and alert threshold.
* ``PUT /admin/api/budgets/<team>`` ``{"daily_usd": 5, "monthly_usd": null}``: a key left
  out keeps that limit, ``null`` removes it (``alert_threshold``: a share, 0.8; ``null``: no
  alerts); unknown teams get 404, bad values 400 (audited).
* ``PUT /admin/api/windows/<user>`` ``{"tokens": 50000, "window_s": 3600}`` (``null``
  tokens: no window) and ``PUT /admin/api/keys/<name>/limits`` ``{"rpm": 60, "tpm": null}``:
  the same rules (audited).
* ``POST /admin/api/cache/flush`` ``{"team": "t", "route": "chat"}``: counts removed.
* ``POST /admin/api/cache/delete`` ``{"entry": "<x-trioproxy-cache-entry of a hit>"}``.
* ``GET /admin/api/spend?by=team,feature&since=7d``: ledger roll-up rows (UTC days).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from quart import Quart, g, jsonify, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.audit import AuditEntry
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.actions import ActionError, flush_cache
from trioproxy.dashboard.budgets import (
    budget_edits,
    budget_from_json,
    edit_budget,
    limit_sources,
)
from trioproxy.dashboard.cache_page import delete_entry
from trioproxy.dashboard.edits import EditError, from_json
from trioproxy.dashboard.http_helpers import json_error
from trioproxy.dashboard.limits import RATE_FIELDS, WINDOW_FIELDS, edit_key_rate, edit_window
from trioproxy.dashboard.snapshot import Usage, all_teams, ledger_of, team_usage
from trioproxy.ledger.backend import check_dimensions
from trioproxy.ledger.report import parse_since

PREFIX = "/admin/api"


def _usage(u: Usage) -> dict[str, Any]:
    return {"limit_usd": u.limit_usd, "spent_usd": u.spent_usd, "level": u.level}


async def _json_body() -> dict[str, Any]:
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ActionError("expected a JSON object body")
    return body


def install(app: Quart, acc: Access) -> None:
    gw = acc.gw

    @app.errorhandler(ActionError)
    async def action_error(err: ActionError) -> ResponseReturnValue:
        if request.path.startswith(PREFIX):
            response = json_error(err.status, err.message)
            if isinstance(err, EditError):
                response.set_data(orjson.dumps({"error": {"message": err.message,
                                  "status": err.status, "fields": err.fields}}))  # fmt: skip
            return response
        return err.message, err.status

    async def budget(team: str) -> dict[str, Any]:
        day, month = await team_usage(gw, team)
        return {
            "team": team,
            "daily_usd": day.limit_usd,
            "monthly_usd": month.limit_usd,
            "alert_threshold": day.threshold,
            "source": {
                name: src.to_dict()
                for name, src in (
                    await limit_sources(gw, team, await budget_edits(acc.store))
                ).items()
            },
            "today": _usage(day),
            "month": _usage(month),
        }

    async def known_team(team: str) -> set[str]:
        known = set(await all_teams(gw))
        if team not in known:
            raise ActionError(f"unknown team {team!r}", 404)
        return known

    @app.get(f"{PREFIX}/budgets/<path:team>")
    async def get_budget(team: str) -> ResponseReturnValue:
        await known_team(team)
        return jsonify(await budget(team))

    @app.put(f"{PREFIX}/budgets/<path:team>")
    async def put_budget(team: str) -> ResponseReturnValue:
        body = await _json_body()
        known = await known_team(team)
        changes = budget_from_json(body)
        warnings = await edit_budget(
            gw, acc.store, g.principal, team, changes, known=known, now=acc.clock()
        )
        return jsonify({**await budget(team), "warnings": warnings})

    @app.put(f"{PREFIX}/windows/<path:user>")
    async def put_window(user: str) -> ResponseReturnValue:
        changes = from_json(await _json_body(), WINDOW_FIELDS)
        await edit_window(gw, acc.store, g.principal, user, changes, now=acc.clock())
        return jsonify({"user": user, "updated": True})

    @app.put(f"{PREFIX}/keys/<name>/limits")
    async def put_key_limits(name: str) -> ResponseReturnValue:
        changes = from_json(await _json_body(), RATE_FIELDS)
        await edit_key_rate(gw, acc.store, g.principal, name, changes, now=acc.clock())
        return jsonify({"key": name, "updated": True})

    @app.post(f"{PREFIX}/cache/flush")
    async def post_flush() -> ResponseReturnValue:
        body = await _json_body()
        team, route = body.get("team"), body.get("route")
        if not isinstance(team, str) or not isinstance(route, str):
            raise ActionError("expected {'team': <string>, 'route': <string>}")
        await known_team(team)
        result = await flush_cache(gw, team, route)
        await acc.store.audit(AuditEntry(acc.clock(), g.principal.name, "cache.flush",
                                         f"{team}/{route}", "",
                                         result.summary()))  # fmt: skip
        return jsonify(result.to_dict())

    @app.post(f"{PREFIX}/cache/delete")
    async def post_delete() -> ResponseReturnValue:
        """One entry, named by a hit's ``x-trioproxy-cache-entry`` header (a bad hit)."""
        body = await _json_body()
        entry = body.get("entry")
        if not isinstance(entry, str):
            raise ActionError("expected {'entry': <x-trioproxy-cache-entry of the hit>}")
        deleted = await delete_entry(gw, acc.store, g.principal, entry, acc.clock())
        return jsonify({"entry": entry, "deleted": deleted, "sent": deleted is None})

    @app.get(f"{PREFIX}/spend")
    async def get_spend() -> ResponseReturnValue:
        by = [d.strip() for d in request.args.get("by", "team").split(",") if d.strip()]
        now = dt.datetime.now(dt.UTC)
        try:
            check_dimensions(by)
            since = parse_since(request.args.get("since", "7d"), now=now)
        except ValueError as err:
            raise ActionError(str(err)) from None
        backend = ledger_of(gw)
        if backend is None:
            raise ActionError("this gateway has no ledger", 409)
        rows = await backend.query(by=by, since=since)
        return jsonify(
            {
                "by": by,
                "since": since.isoformat(),
                "rows": [
                    {
                        **dict(zip(by, r.group, strict=True)),
                        "requests": r.requests,
                        "input_tokens": r.input_tokens,
                        "cache_read_tokens": r.cache_read_tokens,
                        "cache_write_tokens": r.cache_write_5m_tokens + r.cache_write_1h_tokens,
                        "output_tokens": r.output_tokens,
                        "reasoning_tokens": r.reasoning_tokens,
                        "cost_micros": r.cost_micros,
                        "cost_usd": r.cost_usd,
                        "saved_usd": r.saved_usd,
                        "prompt_cache_saved_usd": r.cache_saved_usd,
                    }
                    for r in rows
                ],
            }
        )


__all__ = ["PREFIX", "install"]
