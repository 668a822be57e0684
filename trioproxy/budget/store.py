"""The budget store interface shared by the embedded (SQLite) and Redis stores.

Reservation protocol (every implementation, every operation atomic):

* ``reserve(rid, claims)`` adds every claim or none: each bucket's usage
  (spent + reserved) plus the claim stays within its limit, checked and written
  in one transaction / one Lua script. The reservation holds a *lease* of
  ``lease_s`` seconds.
* ``reserve(..., usage=d)`` also fills the dict ``d`` with each *window* bucket's usage
  (spent + reserved, this reservation included) as read in that same atomic operation:
  the numbers behind the rate-limit headers, without another round trip.
* ``extend(rid, claims)`` adds more to a live reservation, all or nothing, and
  renews its lease. Extending a settled or expired reservation raises
  :class:`ReservationClosed`.
* ``settle(rid, actual)`` replaces what the reservation holds in each bucket by
  what was actually consumed (missing bucket = 0) and releases the rest. It is
  idempotent: a second settle, or a settle of an unknown reservation, does
  nothing. Actual amounts above the held amount are recorded as they are (the
  budget then shows the real spend); see :mod:`trioproxy.budget.gate` for when
  that can happen.
* **Run-time limits**: a claim with a ``limit_ref`` is checked against the team's limit
  as the store holds it *at that moment* (``set_team_limits``; None = no limit), read in
  the same atomic operation, and against the claim's own ``limit`` (the config's) only
  when the store holds none. So a limit change is exact on every worker and instance
  from the next admission on; no process works from a cached limit.
* **Run-time edits** write only what they change, in one atomic operation that also answers
  the value it replaced (an edit's audit line: no other edit comes in between):
  ``update_team_limits`` sets a team's daily and/or monthly limit, keeping the other as
  stored; ``swap_policy`` replaces one policy entry only if it still holds the value the
  edit was computed from (compare-and-set: :mod:`trioproxy.dashboard.actions` computes it
  again from the value found). ``set_team_limits`` / ``set_policy`` write whole values (a
  rebuild's write-back, tests).
* **Lease expiry**: a reservation that is not settled within its lease (the
  gateway crashed, or lost the store while the request ran) is final at its
  *reserved* amount: a settle after ``lease_until`` changes nothing. Reserved
  amounts always count, pending or not, so an abandoned reservation can only
  make the budget stricter; it never lets spend exceed the limit.

Window buckets date each reservation or extension at the ``now`` it was made
(an exact log); period buckets are plain counters. Stores trust the ``now``
they are given: several hosts must keep their clocks in sync (NTP), and a skew
of ``d`` seconds can shift a window's edge by at most ``d``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from trioproxy.budget.claims import Claim, Denial

UNLIMITED = 2**62
"""The ``limit`` of a claim on a bucket without a configured limit (still counted)."""


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time."""


class StateLost(StoreUnavailable):
    """The store answers but has lost its state (no epoch marker: a restart without
    persistence, a FLUSHALL, a failover to an empty replica). It refuses to admit from
    empty state until :mod:`trioproxy.budget.recovery` has rebuilt it from the ledger;
    meanwhile the gate applies its outage policy, as for an unreachable store."""


class ReservationClosed(LookupError):
    """Extend of a reservation that is settled, expired or unknown."""


@dataclass(frozen=True, slots=True)
class TeamLimits:
    """Run-time limits of a team, in µUSD; None = no limit for that period."""

    daily_micros: int | None
    monthly_micros: int | None


FROM_CONFIG = -1
"""A stored limit field without a run-time override: it follows the config's limit (the
claim's own ``limit``), across reloads. Each field of a team's stored limits is an override
of its own: an edit of the daily limit leaves the monthly one following the config, and an
edit setting a field to ``FROM_CONFIG`` drops that field's override. (No limit is ``None``;
µUSD limits are never negative.)"""

NO_OVERRIDES = TeamLimits(FROM_CONFIG, FROM_CONFIG)
"""A team without stored limits: both fields follow the config (where an edit starts)."""

LIMIT_FIELDS = ("daily", "monthly")
"""The fields of a team's limits an edit names (``update_team_limits``)."""


def merged_limits(old: TeamLimits, changes: Mapping[str, int | None]) -> TeamLimits:
    """``old`` with the limits ``changes`` names (``daily`` / ``monthly``) replaced."""
    unknown = set(changes) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown limit fields {sorted(unknown)}")
    return TeamLimits(
        changes["daily"] if "daily" in changes else old.daily_micros,
        changes["monthly"] if "monthly" in changes else old.monthly_micros,
    )


def effective_limit(claim: Claim, stored: TeamLimits | None) -> int:
    """The limit a store checks ``claim`` against, given the team's stored limits."""
    if claim.limit_ref is None or stored is None:
        return claim.limit
    value = stored.daily_micros if claim.limit_ref[1] == "daily" else stored.monthly_micros
    if value == FROM_CONFIG:
        return claim.limit
    return UNLIMITED if value is None else value


def resolved_limits(stored: TeamLimits | None, configured: TeamLimits) -> TeamLimits:
    """The limits in force: each stored field, or the config's where it follows the config
    (``FROM_CONFIG``, or nothing stored)."""
    if stored is None:
        return configured
    return TeamLimits(
        configured.daily_micros if stored.daily_micros == FROM_CONFIG else stored.daily_micros,
        configured.monthly_micros
        if stored.monthly_micros == FROM_CONFIG
        else stored.monthly_micros,
    )


def overridden_fields(stored: TeamLimits | None) -> tuple[str, ...]:
    """The fields of a team's stored limits that are run-time overrides (``LIMIT_FIELDS``
    names): not ``FROM_CONFIG``."""
    if stored is None:
        return ()
    values = (stored.daily_micros, stored.monthly_micros)
    return tuple(f for f, v in zip(LIMIT_FIELDS, values, strict=True) if v != FROM_CONFIG)


class BudgetStore(Protocol):
    timeouts_are_outages: bool
    """True when a call that times out means the store is gone (a network store);
    False when it means the host is busy (an embedded file): see ``BudgetGate._call``."""

    async def reserve(
        self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float,
        usage: dict[str, int] | None = None,
    ) -> Denial | None: ...  # fmt: skip

    async def extend(self, rid: str, claims: Sequence[Claim], *, now: float) -> Denial | None: ...

    async def settle(
        self, rid: str, actual: Mapping[str, int], *, now: float
    ) -> Mapping[str, int] | None:
        """Close ``rid`` at ``actual``. Returns the calendar-period buckets' totals after it,
        when the store read them in the same operation (the gate's alert check then skips a
        bucket below every alert level); None: it does not say."""
        ...

    async def held(self, rid: str, *, now: float) -> list[tuple[str, int]] | None:
        """Reservation ``rid``'s holds, (bucket, amount) in the order taken, while it is open:
        not settled, its lease not ended at ``now``; None otherwise (settled, its lease over:
        counted at its reserved amount, pruned, or never made)."""
        ...

    async def usage(self, bucket: str, *, now: float) -> int: ...

    async def get_team_limits(self, team: str) -> TeamLimits | None: ...

    async def set_team_limits(
        self, team: str, daily_micros: int | None, monthly_micros: int | None
    ) -> None: ...

    async def update_team_limits(
        self, team: str, changes: Mapping[str, int | None]
    ) -> tuple[TeamLimits, TeamLimits]:
        """Set only the limits ``changes`` names (``daily`` / ``monthly``: µUSD, None: no
        limit, ``FROM_CONFIG``: the config's), the other as stored (a team without stored
        limits: :data:`NO_OVERRIDES`), in one atomic operation. Returns the limits before and after it, as that
        operation read and wrote them; writes nothing when they are equal."""
        ...

    async def get_policy(self) -> dict[str, str]:
        """Every run-time policy override (:mod:`trioproxy.budget.policy`), name → JSON."""
        ...

    async def set_policy(self, name: str, value: str) -> None: ...

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        """Compare-and-set: entry ``name`` becomes ``value`` only if it holds ``expected`` now
        (None: no entry), in one atomic operation. Returns what it held: ``value`` was
        written if and only if that is ``expected``."""
        ...

    async def mark_once(self, key: str, *, now: float, expires_at: float) -> bool:
        """True the first time ``key`` is marked (until ``expires_at``), else False."""
        ...


__all__ = [
    "FROM_CONFIG",
    "LIMIT_FIELDS",
    "NO_OVERRIDES",
    "UNLIMITED",
    "BudgetStore",
    "ReservationClosed",
    "StateLost",
    "StoreUnavailable",
    "TeamLimits",
    "effective_limit",
    "merged_limits",
    "overridden_fields",
    "resolved_limits",
]
