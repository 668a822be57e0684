"""Editing a team's budget: daily and monthly limits (integer µUSD) and its alert threshold.

Fields follow :mod:`.edits` (blank keeps, "no limit" / ``null`` clears, nothing is written
unless every field is valid). The limits go to the budget store's team limits (exact on
every worker from the next admission); the threshold is a policy override
(:mod:`trioproxy.budget.policy`: every worker within the gate's ``limits_ttl_s``).
Each change is audited with its old and new value.

An edit writes only the limits it names, in one atomic store operation that answers the
limits it replaced (``BudgetStore.update_team_limits``): two admins changing the daily and
the monthly limit at once both land, and each audit line's old value is the previous line's
new one. The threshold is a compare-and-set (:func:`~trioproxy.dashboard.actions.edit_override`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.overrides import LIMITS as LIMITS_ENTRY
from trioproxy.budget.overrides import changed_fields, limits_entry
from trioproxy.budget.policy import THRESHOLD, Policy, threshold_entry
from trioproxy.budget.store import TeamLimits
from trioproxy.dashboard.actions import (
    ActionError,
    Swap,
    budget_gate,
    edit_override,
    record_override,
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
STORE_FIELDS = {"daily_usd": "daily", "monthly_usd": "monthly"}
"""Each limit's field in the store (``BudgetStore.update_team_limits``)."""
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
    limits = {
        STORE_FIELDS[name]: change.apply(None)
        for name in LIMITS
        if (change := changes.get(name, KEEP)).op != "keep"
    }
    if limits:
        async with budget_gate(gw).limits.editing(LIMITS_ENTRY + team):
            old, new = await store_call(gw, lambda gate: gate.update_team_limits(team, limits))
            if new != old:
                before = limits_entry(team, old.daily_micros, old.monthly_micros)
                entry = limits_entry(team, new.daily_micros, new.monthly_micros)
                await record_override(gw, store, entry,
                                      AuditEntry(now, who.name, "budget.set", team,
                                                 limits_text(*_micros(old)),
                                                 limits_text(*_micros(new))),
                                      fields=changed_fields(before[1], entry[1]))  # fmt: skip
    change = changes.get("alert_threshold", KEEP)
    if change.op == "keep":
        return
    configured = budget_gate(gw).configured_threshold(team)

    def step(policy: Policy) -> Swap[float | None] | None:
        old = policy.threshold(team, configured)
        new = change.apply(old)
        return None if new == old else Swap(old, new, threshold_entry(team, new)[1])

    await edit_override(gw, store, who, now=now, name=THRESHOLD + team, step=step,
                        action="budget.alert", subject=team, text=threshold_text,
                        what=f"the alert threshold of {team!r}")  # fmt: skip


def _micros(limits: TeamLimits) -> tuple[int | None, int | None]:
    return limits.daily_micros, limits.monthly_micros


__all__ = [
    "LIMITS",
    "MAX_USD",
    "EditError",
    "budget_from_form",
    "budget_from_json",
    "edit_budget",
    "limits_text",
    "threshold_text",
]
