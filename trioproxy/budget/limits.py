"""The limits a reservation is checked against, as this process knows them: team limits and
policy overrides (alert thresholds, user windows, key rates) from the store, each cached
``limits_ttl_s`` with one store read per burst (single flight), else the config's.

Changed at run time (``update_team_limits`` / ``swap_policy``, from any process), they apply
on this process at once and on every other within ``limits_ttl_s``; the store itself checks a
team's day and month claims against the limit it holds at reservation time. A Redis store's
changes are saved in its recovery's override log too (:meth:`Limits.save_override`, the
caller's second step, outside the store call's timeout; :mod:`trioproxy.budget.overrides`):
a rebuild after a state loss restores them.

Each edit is atomic in the store, which answers the value it replaced. In this process the
edits of one override also take their turn (:meth:`Limits.editing`, held by the caller from
the store's write to the durable copy's and its audit line), so both are saved in the order
the store took them; instances sharing a store save theirs each on its own (the durable
copy merges the fields an edit changed: :mod:`trioproxy.budget.overrides`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager

import trio

from trioproxy.budget.claims import usd_to_micros
from trioproxy.budget.outage import StoreCalls
from trioproxy.budget.policy import Policy
from trioproxy.budget.store import (
    StoreUnavailable,
    TeamLimits,
    overridden_fields,
    resolved_limits,
)
from trioproxy.config.budgets import DEFAULT_ALERT_THRESHOLD, BudgetsConfig, UserWindow

MAX_REMEMBERED_TEAMS = 100_000
"""Bound on the teams whose configured limits are remembered (keys made at run time may name
any team)."""


class _Turns:
    """One holder at a time per name; a name's lock is forgotten when nobody holds it or
    waits for it (names: every team and user ever edited)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def __call__(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (None, 0))
        if lock is None:
            lock = trio.Lock()
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class Limits:
    def __init__(self, budgets: BudgetsConfig, calls: StoreCalls, ttl_s: float) -> None:
        self._cfg = budgets
        self._calls = calls
        self.ttl_s = ttl_s
        self._teams: dict[str, tuple[TeamLimits | None, float]] = {}
        """Each team's limits as stored (None: none; a field ``FROM_CONFIG``: the config's),
        and until when that read is fresh."""
        self._teams_loading: dict[str, trio.Event] = {}
        self._policy: tuple[Policy, float] = (Policy(), -math.inf)
        self._policy_loading: trio.Event | None = None
        self._configured: dict[str, TeamLimits] = {}
        """The config's limits in µUSD per team, converted once (exact decimal maths)."""
        self.editing = _Turns()
        """``async with limits.editing(name)``: the edits of override ``name`` (its
        :mod:`trioproxy.budget.overrides` entry name) one at a time in this process."""

    # --- team limits --------------------------------------------------------------

    def configured(self, team: str) -> TeamLimits:
        known = self._configured.get(team)
        if known is not None:
            return known
        tb = self._cfg.teams.get(team)
        if tb is None:
            limits = TeamLimits(None, None)
        else:
            daily = None if tb.daily_usd is None else usd_to_micros(tb.daily_usd)
            monthly = None if tb.monthly_usd is None else usd_to_micros(tb.monthly_usd)
            limits = TeamLimits(daily, monthly)
        if len(self._configured) < MAX_REMEMBERED_TEAMS:  # teams named by keys: bounded anyway
            self._configured[team] = limits
        return limits

    def last(self, team: str) -> TeamLimits:
        """With the store down: the limits last read from it (however old), else config."""
        cached = self._teams.get(team)
        return resolved_limits(cached[0] if cached is not None else None, self.configured(team))

    def fresh(self, team: str) -> tuple[TeamLimits | None, Policy | None]:
        """The team's limits and the policy as cached, each None once its TTL is over
        (:meth:`team` and :meth:`policy` read the store then)."""
        now = trio.current_time()
        cached = self._teams.get(team)
        policy, fresh_until = self._policy
        return (
            resolved_limits(cached[0], self.configured(team))
            if cached is not None and now < cached[1]
            else None,
            policy if now < fresh_until else None,
        )

    async def team(self, team: str) -> TeamLimits:
        """The limits in force: each field's run-time override from the store (cached), else
        the config's. With the store unreachable, :meth:`last`: a team without limits keeps
        being served; a team with limits then meets the outage policy when its reservation
        fails."""
        return resolved_limits(await self.stored(team), self.configured(team))

    async def overrides(self, team: str) -> tuple[str, ...]:
        """The team's limit fields (``daily`` / ``monthly``) that hold a run-time override;
        the others follow the config."""
        return overridden_fields(await self.stored(team))

    async def stored(self, team: str) -> TeamLimits | None:
        """The team's limits as the store holds them (cached): None, or each field a limit,
        None (no limit) or ``FROM_CONFIG``. The last read while the store does not answer."""
        cached = self._teams.get(team)
        if cached is not None and trio.current_time() < cached[1]:
            return cached[0]
        pending = self._teams_loading.get(team)
        if pending is not None:  # single flight: a burst of misses makes one store call
            await pending.wait()
            return await self.stored(team)
        self._teams_loading[team] = done = trio.Event()
        try:
            stored = await self._calls.call(lambda: self._calls.store.get_team_limits(team))
            self._teams[team] = (stored, trio.current_time() + self.ttl_s)
        except StoreUnavailable:
            stored = cached[0] if cached is not None else None
        finally:
            del self._teams_loading[team]
            done.set()
        return stored

    async def set_team(self, team: str, daily: int | None, monthly: int | None) -> None:
        """Store the team's limits; the caller saves the durable copy next
        (:meth:`save_override` with ``limits_entry(team, daily, monthly)``)."""
        await self._calls.call(lambda: self._calls.store.set_team_limits(team, daily, monthly))
        self._teams[team] = (TeamLimits(daily, monthly), trio.current_time() + self.ttl_s)

    async def update_team(
        self, team: str, changes: Mapping[str, int | None]
    ) -> tuple[TeamLimits, TeamLimits]:
        """Set only the limits ``changes`` names (``daily`` / ``monthly``: µUSD, None: no
        limit, ``FROM_CONFIG``: drop the field's override), atomically in the store (a
        field it holds no override for follows the config); the limits before and after, as
        the store read and wrote them (fields ``FROM_CONFIG`` included: :meth:`resolved`
        gives the values). The caller saves the durable copy next."""
        old, new = await self._calls.call(
            lambda: self._calls.store.update_team_limits(team, changes)
        )
        self._teams[team] = (new, trio.current_time() + self.ttl_s)
        return old, new

    def resolved(self, team: str, stored: TeamLimits) -> TeamLimits:
        """``stored`` (the store's answer for ``team``) with the config's limits where it
        follows the config."""
        return resolved_limits(stored, self.configured(team))

    async def save_override(
        self, name: str, value: str, *, fields: Collection[str] | None = None
    ) -> None:
        """The durable copy, once the store took the change (a change the store refused is
        saved nowhere), when the store has a recovery with an override log
        (:mod:`trioproxy.budget.overrides`): a store that loses its state is rebuilt with it.
        ``fields``: the keys of ``value`` (a JSON object) the change wrote, the only ones
        saved over the copy (None: the whole value). Not bounded by the store call's timeout
        (a slow admin store is not a budget store outage); raises the log's own errors (the
        admin store's ``StoreError``)."""
        rec = self._calls.recovery
        if rec is not None and rec.overrides is not None:
            await rec.overrides.save_override(name, value, fields=fields)

    # --- policy overrides ---------------------------------------------------------

    def configured_threshold(self, team: str) -> float:
        return self._cfg.alert_threshold(team)

    def configured_window(self, user: str) -> UserWindow | None:
        return self._cfg.users.get(user) or self._cfg.users.get("*")

    @property
    def cached_policy(self) -> Policy:
        return self._policy[0]

    async def policy(self) -> Policy:
        """The store's overrides, cached; the last read (or none) while it does not answer."""
        policy, fresh_until = self._policy
        if trio.current_time() < fresh_until:
            return policy
        if self._policy_loading is not None:  # single flight
            await self._policy_loading.wait()
            return self._policy[0]
        self._policy_loading = done = trio.Event()
        try:
            policy = Policy.decode(await self._calls.call(self._calls.store.get_policy))
            self._policy = (policy, trio.current_time() + self.ttl_s)
        except StoreUnavailable:
            pass
        finally:
            self._policy_loading = None
            done.set()
        return policy

    async def set_policy(self, name: str, value: str) -> None:
        """Store one override; this process reads it back at its next use. The caller saves
        the durable copy next (:meth:`save_override`)."""
        await self._calls.call(lambda: self._calls.store.set_policy(name, value))
        self._policy = (self._policy[0], -math.inf)

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        """Compare-and-set of one override (``BudgetStore.swap_policy``): what it held, and
        ``value`` written if that is ``expected``; this process reads it back at its next
        use. The caller saves the durable copy next."""
        held = await self._calls.call(lambda: self._calls.store.swap_policy(name, expected, value))
        self._policy = (self._policy[0], -math.inf)
        return held


__all__ = ["DEFAULT_ALERT_THRESHOLD", "Limits"]
