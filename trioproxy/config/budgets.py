"""Budgets as configured (``[budgets]``): team limits in USD with their alert thresholds,
users' token windows, the budget store's outage policy and timeouts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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


__all__ = ["DEFAULT_ALERT_THRESHOLD", "BudgetsConfig", "TeamBudget", "UserWindow"]
