"""Editing a team's budget: daily and monthly limits (integer µUSD) and its alert threshold.

Fields follow :mod:`.edits` (blank keeps, "no limit" / ``null`` clears, nothing is written
unless every field is valid); a limit may also be ``config``: its run-time override is
dropped and it follows the config again (each limit is an override of its own:
``FROM_CONFIG``). A limit follows the config's rule (``limit_problem``: above 0); a daily
limit above the monthly one is saved with a warning (``limits_warning``, as ``check-config``). The limits go to the budget store's team limits (exact on
every worker from the next admission); the threshold is a policy override
(:mod:`trioproxy.budget.policy`: every worker within the gate's ``limits_ttl_s``).
Each change is audited with its old and new value.

An edit writes only the limits it names, in one atomic store operation that answers the
limits it replaced (``BudgetStore.update_team_limits``): two admins changing the daily and
the monthly limit at once both land, and each audit line's old value is the previous line's
new one. The threshold is a compare-and-set (:func:`~trioproxy.dashboard.actions.edit_override`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.db import StoreError
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.overrides import LIMITS as LIMITS_ENTRY
from trioproxy.budget.overrides import changed_fields, limits_entry
from trioproxy.budget.policy import THRESHOLD, Policy, threshold_entry
from trioproxy.budget.store import (
    FROM_CONFIG,
    LIMIT_FIELDS,
    StoreUnavailable,
    TeamLimits,
    overridden_fields,
)
from trioproxy.config.budgets import limit_problem, limits_warning
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
    Invalid,
    Parser,
    from_form,
    from_json,
    percent_share,
    share,
    usd_micros,
    usd_text,
)
from trioproxy.dashboard.edits import MICROS as USD
from trioproxy.edge.app import Gateway

LIMITS = ("daily_usd", "monthly_usd")
STORE_FIELDS = {"daily_usd": "daily", "monthly_usd": "monthly"}
"""Each limit's field in the store (``BudgetStore.update_team_limits``)."""
CONFIG = "config"
"""A limit field's value that drops its run-time override: the field follows the config's
limit again, across reloads (the form's "use config" button; the admin API's
``{"daily_usd": "config"}``)."""


def limit_micros(raw: Any) -> int:
    """A team limit: USD (µUSD, by the config's rule :func:`limit_problem`: above zero), or
    ``config`` (``FROM_CONFIG``)."""
    if isinstance(raw, str) and raw.strip().lower() == CONFIG:
        return FROM_CONFIG
    micros = usd_micros(raw)
    if (problem := limit_problem(micros / USD)) is not None:
        raise Invalid(problem)
    return micros


FORM_FIELDS: dict[str, Parser] = {
    "daily_usd": limit_micros,
    "monthly_usd": limit_micros,
    "alert_pct": percent_share,
}
JSON_FIELDS: dict[str, Parser] = {
    "daily_usd": limit_micros,
    "monthly_usd": limit_micros,
    "alert_threshold": share,
}


def budget_from_form(form: Mapping[str, str]) -> dict[str, Change[Any]]:
    """The row's fields; ``use_config=<limit>`` (the "Use config" button's form) drops that
    limit's override."""
    changes = from_form(form, FORM_FIELDS)
    if (use := form.get("use_config")) is not None:
        if use not in LIMITS:
            raise EditError({"use_config": f"not a limit: {use!r}"})
        changes[use] = Change("set", FROM_CONFIG)
    changes["alert_threshold"] = changes.pop("alert_pct")
    return changes


def budget_from_json(body: Mapping[str, Any]) -> dict[str, Change[Any]]:
    return from_json(body, JSON_FIELDS)


def limits_text(
    daily: int | None, monthly: int | None, *, from_config: tuple[str, ...] = ()
) -> str:
    """``daily $20, monthly $250 (config)``: the limits in force; ``(config)`` after those
    that follow the config (``from_config``: ``daily`` / ``monthly``)."""

    def one(name: str, micros: int | None) -> str:
        return f"{name} {usd_text(micros)}" + (" (config)" if name in from_config else "")

    return f"{one('daily', daily)}, {one('monthly', monthly)}"


def field_text(text: str, name: str) -> str | None:
    """The part of a :func:`limits_text` about limit ``name`` (``daily`` / ``monthly``)."""
    daily, sep, monthly = text.partition(", monthly ")
    if not sep or not daily.startswith("daily "):
        return None
    return daily if name == "daily" else "monthly " + monthly


def _text(gw: Gateway, team: str, stored: TeamLimits) -> str:
    limits = budget_gate(gw).limits.resolved(team, stored)
    kept = tuple(f for f in LIMIT_FIELDS if f not in overridden_fields(stored))
    return limits_text(*_micros(limits), from_config=kept)


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
) -> list[str]:
    """Apply ``changes`` to ``team``'s limits and threshold, and audit each change (a limit
    ``FROM_CONFIG`` drops that field's override). The warnings about the limits now in
    force (:func:`~trioproxy.config.budgets.limits_warning`: saved all the same)."""
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
                                                 _text(gw, team, old), _text(gw, team, new)),
                                      fields=changed_fields(before[1], entry[1]))  # fmt: skip
            daily, monthly = _micros(budget_gate(gw).limits.resolved(team, new))
            warning = limits_warning(
                None if daily is None else daily / USD, None if monthly is None else monthly / USD
            )
            warnings = [] if warning is None else [warning]
    else:
        warnings = []
    change = changes.get("alert_threshold", KEEP)
    if change.op == "keep":
        return warnings
    configured = budget_gate(gw).configured_threshold(team)

    def step(policy: Policy) -> Swap[float | None] | None:
        old = policy.threshold(team, configured)
        new = change.apply(old)
        return None if new == old else Swap(old, new, threshold_entry(team, new)[1])

    await edit_override(gw, store, who, now=now, name=THRESHOLD + team, step=step,
                        action="budget.alert", subject=team, text=threshold_text,
                        what=f"the alert threshold of {team!r}")  # fmt: skip
    return warnings


@dataclass(frozen=True, slots=True)
class LimitSource:
    """Where a team limit in force comes from: the config, or a run-time edit (``by`` and
    ``at``: the audit line that set it, when the last ``AUDIT_SCAN`` budget edits hold it)."""

    edited: bool
    by: str | None = None
    at: float | None = None

    def label(self) -> str:
        if not self.edited:
            return "config"
        if self.by is None or self.at is None:
            return "edited at run time"
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.at))
        return f"edited at run time by {self.by}, {when}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": "run time" if self.edited else "config", "by": self.by, "at": self.at}


AUDIT_SCAN = 500
"""The budget edits (``budget.set`` audit lines, newest first) searched for who set a limit."""


async def budget_edits(store: AdminStore | None) -> list[AuditEntry]:
    """The last :data:`AUDIT_SCAN` limit edits, newest first (one admin store read; none
    when it does not answer: the sources then say "run time" without who)."""
    if store is None:
        return []
    try:
        return await store.audit_log(limit=AUDIT_SCAN, action="budget.set")
    except StoreError:
        return []


async def limit_sources(
    gw: Gateway, team: str, edits: Sequence[AuditEntry]
) -> dict[str, LimitSource]:
    """Each limit field's (``daily_usd`` / ``monthly_usd``) source; none without budgets or
    while the budget store does not answer."""
    if gw.admission is None:
        return {}
    try:
        edited = await gw.admission.gate.limits.overrides(team)
    except StoreUnavailable:
        return {}
    out: dict[str, LimitSource] = {}
    for name in LIMITS:
        field = STORE_FIELDS[name]
        if field not in edited:
            out[name] = LimitSource(False)
            continue
        line = next(
            (e for e in edits
             if e.target == team and field_text(e.old, field) != field_text(e.new, field)),
            None,
        )  # fmt: skip
        out[name] = LimitSource(True) if line is None else LimitSource(True, line.actor, line.ts)
    return out


def _micros(limits: TeamLimits) -> tuple[int | None, int | None]:
    return limits.daily_micros, limits.monthly_micros


__all__ = [
    "CONFIG",
    "LIMITS",
    "MAX_USD",
    "EditError",
    "LimitSource",
    "budget_edits",
    "budget_from_form",
    "budget_from_json",
    "edit_budget",
    "field_text",
    "limit_micros",
    "limit_sources",
    "limits_text",
    "threshold_text",
]
