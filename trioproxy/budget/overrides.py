"""Budget overrides set at run time, as one list of named entries: a team's limits
(``limits:<team>``, ``{"daily": µUSD|null, "monthly": µUSD|null}``) and the policy entries
of :mod:`trioproxy.budget.policy` (thresholds, token windows, key rates).

A Redis budget store holds the overrides in force, and loses them with its state; so an
:class:`OverrideLog` (the admin store's ``budget_overrides`` table) keeps a durable copy:
:mod:`trioproxy.budget.limits` writes each override to the store, then there (a change the
store refused is saved nowhere), and a
rebuild (:mod:`trioproxy.budget.recovery`) writes the log's entries back before the state's
new epoch admits anything. Pure, apart from the Protocol.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Protocol
from urllib.parse import urlsplit

from trioproxy.budget.store import TeamLimits

LIMITS = "limits:"


class OverrideLog(Protocol):
    async def save_override(self, name: str, value: str) -> None: ...

    async def overrides(self) -> dict[str, str]:
        """Every override saved, name → value (the last one saved for each name)."""
        ...


def limits_entry(team: str, daily: int | None, monthly: int | None) -> tuple[str, str]:
    return LIMITS + team, json.dumps({"daily": daily, "monthly": monthly})


def team_limits(name: str, value: str) -> tuple[str, TeamLimits] | None:
    """``(team, limits)`` for a ``limits:`` entry; None for a policy entry."""
    if not name.startswith(LIMITS):
        return None
    raw = json.loads(value)
    return name[len(LIMITS) :], TeamLimits(raw["daily"], raw["monthly"])


def write_back_safe(database_url: str | None, redis_url: str | None) -> bool:
    """Whether a rebuild may write this host's override log back into ``redis_url``'s
    store: the log must hold the last value an admin set on *any* instance sharing that
    store, or a stale copy would come back (host A sets $100, B sets $50; A rebuilds: $100).
    True for a PostgreSQL admin store (``database_url``: one log for every instance), and
    for the per-host SQLite log when Redis is this host's alone (a Unix socket or a loopback
    address). A per-host log beside a Redis reached over the network may be one of several
    hosts' copies: no write-back (the config's limits apply after a state loss)."""
    if database_url:
        return True
    if not redis_url:
        return False
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["LIMITS", "OverrideLog", "limits_entry", "team_limits", "write_back_safe"]
