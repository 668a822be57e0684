"""Editing a team's budget limits: parse what was sent, check it, apply it, audit it.

A change names each limit it touches: **keep** (a blank form field, or a JSON key left
out), **clear** (the form's "no limit" box, or JSON ``null``) or **set** to a number of
USD. One field's mistake never touches the other limit: nothing is written unless every
field is valid. Limits are bounded (``MAX_USD``) so no value can overflow a store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import trio

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.claims import usd_to_micros
from trioproxy.budget.store import StoreUnavailable, TeamLimits
from trioproxy.dashboard.actions import ActionError, budget_gate
from trioproxy.edge.app import Gateway

MAX_USD = 1_000_000_000.0
"""Largest limit accepted (one billion USD): far above any real budget, far below overflow."""
FIELDS = ("daily_usd", "monthly_usd")
Field = Literal["daily_usd", "monthly_usd"]


@dataclass(frozen=True, slots=True)
class Change:
    op: Literal["keep", "clear", "set"]
    usd: float | None = None


KEEP = Change("keep")


class EditError(ActionError):
    """Some fields are wrong: ``fields`` maps each to its message (400)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()), 400)
        self.fields = dict(fields)


def parse_usd(value: Any) -> float | str:
    """A limit in USD, or the message saying what is wrong with ``value``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "must be a number of USD"
    try:
        usd = float(value.strip().lstrip("$").replace(",", "") if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return "must be a number of USD"
    if not math.isfinite(usd):
        return "must be a finite number of USD"
    if usd < 0:
        return "must be a non-negative number of USD"
    if usd > MAX_USD:
        return f"must be at most {MAX_USD:,.0f} USD"
    return usd


def _change(value: Any, *, clear: bool) -> Change | str:
    if clear:
        return Change("clear")
    parsed = parse_usd(value)
    return parsed if isinstance(parsed, str) else Change("set", parsed)


def from_form(form: Mapping[str, str]) -> dict[str, Change]:
    """A form: blank keeps, the ``clear_<field>`` box removes the limit, a number sets it."""
    changes: dict[str, Change] = {}
    errors: dict[str, str] = {}
    for name in FIELDS:
        raw = form.get(name, "").strip()
        clear = form.get(f"clear_{name}") in ("on", "1", "true")
        if not raw and not clear:
            changes[name] = KEEP
            continue
        c = _change(raw, clear=clear)
        if isinstance(c, str):
            errors[name] = c
        else:
            changes[name] = c
    if errors:
        raise EditError(errors)
    return changes


def from_json(body: Mapping[str, Any]) -> dict[str, Change]:
    """A JSON object: a key left out keeps, ``null`` removes the limit, a number sets it."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise EditError({k: "unknown field" for k in unknown})
    changes: dict[str, Change] = {}
    errors: dict[str, str] = {}
    for name in FIELDS:
        if name not in body:
            changes[name] = KEEP
            continue
        c = _change(body[name], clear=body[name] is None)
        if isinstance(c, str):
            errors[name] = c
        else:
            changes[name] = c
    if errors:
        raise EditError(errors)
    return changes


def apply(current: float | None, change: Change) -> float | None:
    if change.op == "keep":
        return current
    return None if change.op == "clear" else change.usd


def limits_text(daily: float | None, monthly: float | None) -> str:
    def one(v: float | None) -> str:
        return "none" if v is None else f"${v:,.6f}".rstrip("0").rstrip(".")

    return f"daily {one(daily)}, monthly {one(monthly)}"


async def stored_limits(gw: Gateway, team: str) -> tuple[float | None, float | None]:
    """The limits in force now, read from the store itself (not a worker's cache)."""
    gate = budget_gate(gw)
    try:
        with trio.fail_after(gate.outage.call_timeout_s):
            stored = await gate.store.get_team_limits(team)
    except (StoreUnavailable, trio.TooSlowError) as exc:
        raise ActionError(f"budget store unavailable: {exc}", 503) from None
    if stored is None:
        tb = gw.settings.budgets.teams.get(team)
        return (None, None) if tb is None else (tb.daily_usd, tb.monthly_usd)
    return _usd(stored)


def _usd(limits: TeamLimits) -> tuple[float | None, float | None]:
    d, m = limits.daily_micros, limits.monthly_micros
    return (None if d is None else d / 1e6, None if m is None else m / 1e6)


async def edit_limits(
    gw: Gateway,
    store: AdminStore,
    who: Principal,
    team: str,
    changes: Mapping[str, Change],
    *,
    known: set[str],
    now: float,
) -> tuple[float | None, float | None]:
    """Apply ``changes`` to ``team``'s limits, audit them, and return the new limits."""
    if team not in known or not who.may_see(team):
        raise ActionError(f"unknown team {team!r}", 404)
    old_daily, old_monthly = await stored_limits(gw, team)
    daily = apply(old_daily, changes.get("daily_usd", KEEP))
    monthly = apply(old_monthly, changes.get("monthly_usd", KEEP))
    if (daily, monthly) == (old_daily, old_monthly):
        return daily, monthly
    for usd in (daily, monthly):
        if usd is not None:
            usd_to_micros(usd)  # bounded above by MAX_USD: cannot overflow
    try:
        await budget_gate(gw).set_team_limits(team, daily, monthly)
    except StoreUnavailable as exc:
        raise ActionError(f"budget store unavailable: {exc}", 503) from None
    entry = AuditEntry(now, who.name, "budget.set", team, limits_text(old_daily, old_monthly),
                       limits_text(daily, monthly))  # fmt: skip
    await store.audit(entry)
    return daily, monthly


__all__ = [
    "FIELDS",
    "MAX_USD",
    "Change",
    "EditError",
    "edit_limits",
    "from_form",
    "from_json",
    "limits_text",
    "parse_usd",
    "stored_limits",
]
