"""Editing a team's budget: daily and monthly limits (integer µUSD) and its alert threshold.

Fields follow :mod:`.edits` (blank keeps, "no limit" / ``null`` clears, nothing is written
unless every field is valid). The limits go to the budget store's team limits (exact on
every worker from the next admission); the threshold is a policy override
(:mod:`trioproxy.budget.policy`: every worker within the gate's ``limits_ttl_s``).
Each change is audited with its old and new value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.overrides import limits_entry
from trioproxy.budget.policy import threshold_entry
from trioproxy.dashboard.actions import (
    ActionError,
    budget_gate,
    current_policy,
    record_override,
    set_override,
    store_call,
)
from trioproxy.dashboard.edits import (
    KEEP,
    MAX_USD,
    Change,
    EditError,
    Parser,
    from_form,
    from_json,
    percent_share,
    share,
    usd_micros,
    usd_text,
)
from trioproxy.edge.app import Gateway

LIMITS = ("daily_usd", "monthly_usd")
FORM_FIELDS: dict[str, Parser] = {
    "daily_usd": usd_micros,
    "monthly_usd": usd_micros,
    "alert_pct": percent_share,
}
JSON_FIELDS: dict[str, Parser] = {
    "daily_usd": usd_micros,
    "monthly_usd": usd_micros,
    "alert_threshold": share,
}


def budget_from_form(form: Mapping[str, str]) -> dict[str, Change[Any]]:
    changes = from_form(form, FORM_FIELDS)
    changes["alert_threshold"] = changes.pop("alert_pct")
    return changes


def budget_from_json(body: Mapping[str, Any]) -> dict[str, Change[Any]]:
    return from_json(body, JSON_FIELDS)


def limits_text(daily: int | None, monthly: int | None) -> str:
    return f"daily {usd_text(daily)}, monthly {usd_text(monthly)}"


def threshold_text(value: float | None) -> str:
    return "off" if value is None else f"{value * 100:g}%"


async def stored_limits(gw: Gateway, team: str) -> tuple[int | None, int | None]:
    """The limits in force now (µUSD), read from the store itself (not a worker's cache)."""
    stored = await store_call(gw, lambda gate: gate.store.get_team_limits(team))
    limits = stored if stored is not None else budget_gate(gw).limits.configured(team)
    return limits.daily_micros, limits.monthly_micros


async def stored_threshold(gw: Gateway, team: str) -> float | None:
    policy = await current_policy(gw)
    return policy.threshold(team, budget_gate(gw).configured_threshold(team))


async def edit_budget(
    gw: Gateway,
    store: AdminStore,
    who: Principal,
    team: str,
    changes: Mapping[str, Change[Any]],
    *,
    known: set[str],
    now: float,
) -> None:
    """Apply ``changes`` to ``team``'s limits and threshold, and audit each change."""
    if team not in known or not who.may_see(team):
        raise ActionError(f"unknown team {team!r}", 404)
    old_daily, old_monthly = await stored_limits(gw, team)
    daily = changes.get("daily_usd", KEEP).apply(old_daily)
    monthly = changes.get("monthly_usd", KEEP).apply(old_monthly)
    if (daily, monthly) != (old_daily, old_monthly):
        await store_call(gw, lambda gate: gate.set_team_limits(team, daily, monthly))
        await record_override(gw, store, limits_entry(team, daily, monthly),
                              AuditEntry(now, who.name, "budget.set", team,
                                         limits_text(old_daily, old_monthly),
                                         limits_text(daily, monthly)))  # fmt: skip
    change = changes.get("alert_threshold", KEEP)
    if change.op == "keep":
        return
    old = await stored_threshold(gw, team)
    new = change.apply(old)
    if new != old:
        await set_override(gw, store, who, now=now, entry=threshold_entry(team, new),
                           action="budget.alert", subject=team, old=threshold_text(old),
                           new=threshold_text(new))  # fmt: skip


__all__ = [
    "LIMITS",
    "MAX_USD",
    "EditError",
    "budget_from_form",
    "budget_from_json",
    "edit_budget",
    "limits_text",
    "stored_limits",
    "stored_threshold",
    "threshold_text",
]
