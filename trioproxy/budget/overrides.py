"""Budget overrides set at run time, as one list of named entries: a team's limits
(``limits:<team>``, ``{"daily": µUSD|null, "monthly": µUSD|null}``) and the policy entries
of :mod:`trioproxy.budget.policy` (thresholds, token windows, key rates).

A Redis budget store holds the overrides in force, and loses them with its state; so an
:class:`OverrideLog` (the admin store's ``budget_overrides`` table) keeps a durable copy:
:mod:`trioproxy.budget.limits` writes each override to the store, then there (a change the
store refused is saved nowhere), and a
rebuild (:mod:`trioproxy.budget.recovery`) writes the log's entries back before the state's
new epoch admits anything.

An edit saves only the fields it changed (:func:`changed_fields`; merged into the saved
object by :func:`merged_value`): two edits of one team's limits (daily on one instance,
monthly on another) keep both in the copy whichever saves first. Two edits of the *same*
field on two instances at once are saved in the order their saves arrive, which may not be
the order the store took them (one instance's own edits take turns: ``Limits.editing``).
Pure, apart from the Protocol.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection
from typing import Any, Protocol
from urllib.parse import urlsplit

from trioproxy.budget.store import TeamLimits

LIMITS = "limits:"


class OverrideLog(Protocol):
    async def save_override(
        self, name: str, value: str, *, fields: Collection[str] | None = None
    ) -> None:
        """Save ``value`` as ``name``'s, or with ``fields`` only those keys of it (a JSON
        object) over the saved one (:func:`merged_value`), atomically."""
        ...

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


def changed_fields(old: str | None, new: str) -> list[str] | None:
    """The keys whose values differ between two JSON objects with the same keys (an edit's
    old and new value); None (the whole value) when either is not such an object."""
    before, after = _object(old), _object(new)
    if before is None or after is None or before.keys() != after.keys():
        return None
    return [k for k in after if before[k] != after[k]]


def merged_value(saved: str, value: str, fields: Collection[str]) -> str:
    """``saved`` with ``fields`` taken from ``value`` (both JSON objects); ``value`` itself
    when ``saved`` is not an object holding every one of those fields."""
    base, new = _object(saved), _object(value)
    if base is None or new is None or not set(fields) <= base.keys() & new.keys():
        return value
    return json.dumps({**base, **{f: new[f] for f in fields}})


def _object(text: str | None) -> dict[str, Any] | None:
    try:
        value = None if text is None else json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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


__all__ = [
    "LIMITS",
    "OverrideLog",
    "changed_fields",
    "limits_entry",
    "merged_value",
    "team_limits",
    "write_back_safe",
]
