"""What an admin may change at run time besides budgets (:mod:`.budgets`): cached answers;
and the budget store as every edit reaches it (:func:`store_call`, :func:`edit_override`).

An edit of a policy override is computed from the value the store holds and written with
compare-and-set (``BudgetStore.swap_policy``): when another edit came in between, it is
computed again from the value found (its fields applied to the other's result, as an atomic
write of those fields would be), up to :data:`SWAP_ATTEMPTS` times, then a 409
(:class:`Conflict`). The audit line's old value is the one the swap replaced."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

import trio

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.db import StoreError
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.gate import BudgetGate
from trioproxy.budget.overrides import changed_fields
from trioproxy.budget.policy import Policy
from trioproxy.budget.store import StoreUnavailable
from trioproxy.edge.app import Gateway

T = TypeVar("T")
SWAP_ATTEMPTS = 8
"""Compare-and-set attempts of one edit (each loses only to another edit that was written)."""


class ActionError(ValueError):
    """A bad admin request (400), or one the gateway cannot serve (``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Conflict(ActionError):
    """The value kept changing under an edit (409): nothing of it was written."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: changed by someone else meanwhile; reload and try again", 409)


@dataclass(frozen=True, slots=True)
class Swap(Generic[T]):
    """An edit of one override computed from its current value: ``old`` and ``new`` as the
    audit shows them, ``value`` the entry's new text."""

    old: T
    new: T
    value: str


def budget_gate(gw: Gateway) -> BudgetGate:
    if gw.admission is None:
        raise ActionError("budgets are not enabled on this gateway", 503)
    return gw.admission.gate


async def store_call(gw: Gateway, fn: Callable[[BudgetGate], Awaitable[T]]) -> T:
    """``fn(gate)``, bounded by the gate's store call timeout: 503 when the budget store
    does not answer (or budgets are off)."""
    gate = budget_gate(gw)
    try:
        with trio.fail_after(gate.outage.call_timeout_s):
            return await fn(gate)
    except (StoreUnavailable, trio.TooSlowError) as exc:
        raise ActionError(f"budget store unavailable: {exc}", 503) from None


async def edit_override(
    gw: Gateway, store: AdminStore, who: Principal, *, now: float, name: str,
    step: Callable[[Policy], Swap[T] | None], action: str, subject: str,
    text: Callable[[T], str], what: str,
) -> None:  # fmt: skip
    """Edit policy override ``name`` (:mod:`trioproxy.budget.policy`): ``step`` computes the
    change from the policy as the store holds it (None: nothing to change), written with
    compare-and-set (computed again when another edit came first), then its durable copy and
    the audit line, ``action`` on ``subject``, ``text(old)`` → ``text(new)``. One edit of
    ``name`` at a time in this process (``Limits.editing``): its audit lines are in the
    order the store took the changes. :class:`Conflict` (409, naming ``what``) when the
    value changed under every attempt."""

    async def swap_once(expected: str | None, value: str) -> str | None:
        return await store_call(gw, lambda gate: gate.swap_policy(name, expected, value))

    async with budget_gate(gw).limits.editing(name):
        entries = await store_call(gw, lambda gate: gate.store.get_policy())  # not a cache
        held = entries.get(name)
        for _ in range(SWAP_ATTEMPTS):
            if held is None:
                entries.pop(name, None)
            else:
                entries[name] = held
            swap = step(Policy.decode(entries))
            if swap is None:
                return
            expected = held
            held = await swap_once(expected, swap.value)
            if held == expected:
                break
        else:
            raise Conflict(what)
        audit = AuditEntry(now, who.name, action, subject, text(swap.old), text(swap.new))
        await record_override(gw, store, (name, swap.value), audit,
                              fields=changed_fields(expected, swap.value))  # fmt: skip


async def record_override(
    gw: Gateway, store: AdminStore, entry: tuple[str, str], audit: AuditEntry, *,
    fields: Collection[str] | None = None,
) -> None:  # fmt: skip
    """After the budget store took ``entry``: its durable copy (``fields`` of it, or all:
    ``BudgetGate.save_override``; outside :func:`store_call`'s timeout: a slow admin store
    is no budget store outage) and the audit line. The change applies either way; an
    :class:`ActionError` (503) names what the admin store did not save."""
    missing: list[str] = []
    try:
        await budget_gate(gw).save_override(*entry, fields=fields)
    except StoreError as exc:
        missing.append(f"its durable copy ({exc}; a Redis state loss would undo it)")
    try:
        await store.audit(audit)
    except StoreError as exc:
        missing.append(f"its audit line ({exc})")
    if missing:
        raise ActionError(
            "the change applies now, but the admin store did not save "
            + " nor ".join(missing) + "; repeat the edit once it answers", 503,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlushResult:
    team: str
    route: str
    scope: str
    exact: int | None
    """Exact-cache entries removed (None: sent to the workers, see ``sent``)."""
    semantic: int | None
    """Semantic entries removed; None when they could not be addressed."""
    note: str | None = None
    sent: bool = False
    """Sent to every data-plane worker, each applies it within about a second (the dashboard
    in its own process: ``server/cache_commands.py``); the counts are in their logs."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """For the audit log."""
        if self.sent:
            return "sent to every worker"
        return f"{self.exact} exact, {self.semantic} semantic"


async def flush_cache(gw: Gateway, team: str, route_name: str) -> FlushResult:
    """Drop the cached answers of one tenant scope (the team's, or ``global``) and route."""
    if gw.cache is None:
        raise ActionError("the response cache is not enabled on this gateway", 409)
    route = gw.settings.routes.get(route_name)
    if route is None:
        raise ActionError(f"unknown route {route_name!r}", 404)
    if not team.strip():
        raise ActionError("team must not be empty")
    scope, exact, semantic = await gw.cache.flush(team, route)
    if getattr(gw.cache, "relayed", False):
        return FlushResult(team, route_name, scope, None, None, None, sent=True)
    return FlushResult(team, route_name, scope, exact, semantic, None)


__all__ = [
    "SWAP_ATTEMPTS",
    "ActionError",
    "Conflict",
    "FlushResult",
    "Swap",
    "budget_gate",
    "edit_override",
    "flush_cache",
    "record_override",
]
