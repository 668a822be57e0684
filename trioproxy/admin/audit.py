"""The audit log's entries: who changed what, when, from which value to which (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    actor: str
    """The user name (or ``key:<name>`` for an admin API key)."""
    action: str
    """``budget.set``, ``cache.flush``, ``key.create``, ``breaker.reset``, ``user.create``..."""
    target: str
    """What was changed: a team, ``team/route``, a key name, a target, a user."""
    old: str = ""
    new: str = ""
    seq: int = 0
    """Position in the log (assigned by the store)."""


def describe(value: Any) -> str:
    """A compact, stable rendering of an old or new value."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


__all__ = ["AuditEntry", "describe"]
