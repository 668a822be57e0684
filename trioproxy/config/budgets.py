"""Budgets as configured (``[budgets]``): team limits in USD with their alert thresholds,
users' token windows, the budget store's outage policy and timeouts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from trioproxy.config.fields import join

DEFAULT_ALERT_THRESHOLD = 0.8
"""The alert threshold of a team without ``[budgets.teams]`` entry or override."""


@dataclass(frozen=True, slots=True)
class TeamBudget:
    team: str
    daily_usd: float | None = None
    monthly_usd: float | None = None
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD


@dataclass(frozen=True, slots=True)
class UserWindow:
    user: str
    """A key's user, or ``*`` for every user without its own entry."""
    tokens: int
    window_s: int = 3600


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    teams: Mapping[str, TeamBudget] = field(default_factory=dict)
    users: Mapping[str, UserWindow] = field(default_factory=dict)
    timezone: str = "UTC"
    webhook_url: str | None = None
    on_store_outage: Literal["fail_closed", "fail_open"] = "fail_closed"
    """Budget store unreachable: refuse (503), or admit under a small local limit."""
    store_timeout_s: float = 2.0
    """Longest wait for one budget store call before the outage policy applies."""
    reservation_lease_s: float = 900.0
    """A reservation never settled (crash) counts as spent at its amount after this."""

    def alert_threshold(self, team: str) -> float:
        """The alert threshold configured for ``team`` (a share of its limit); the default
        for a team without an entry. A policy override (:mod:`trioproxy.budget.policy`)
        may replace it at run time."""
        tb = self.teams.get(team)
        return tb.alert_threshold if tb is not None else DEFAULT_ALERT_THRESHOLD


def limit_problem(usd: float | Decimal) -> str | None:
    """The rule for one team limit (daily or monthly, USD), the same in the config
    (``check-config``, a reload) and at run time (the dashboard's form, the admin API): above
    zero. No limit is no value, not 0."""
    return None if usd > 0 else "must be > 0 (leave it out, or clear it, for no limit)"


def limits_warning(daily: float | Decimal | None, monthly: float | Decimal | None) -> str | None:
    """What a team's limits had better not be (a warning, in the config and at run time,
    never a refusal): a daily limit above the monthly one, which then never binds."""
    if daily is None or monthly is None or daily <= monthly:
        return None
    return (
        f"the daily limit ({daily:g} USD) is above the monthly one ({monthly:g} USD): "
        "the monthly limit stops the team first"
    )


def budget_warnings(budgets: BudgetsConfig) -> list[str]:
    """Each configured team's :func:`limits_warning`, for ``check-config``."""
    out: list[str] = []
    for team, tb in budgets.teams.items():
        if (w := limits_warning(tb.daily_usd, tb.monthly_usd)) is not None:
            out.append(f"{join('budgets.teams', team)}: {w}")
    return out


__all__ = [
    "DEFAULT_ALERT_THRESHOLD",
    "BudgetsConfig",
    "TeamBudget",
    "UserWindow",
    "budget_warnings",
    "limit_problem",
    "limits_warning",
]
