"""What an admin may change at run time besides budgets (:mod:`.budgets`): cached answers;
and the budget store as every edit reaches it (:func:`store_call`, :func:`current_policy`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import trio

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.db import StoreError
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.gate import BudgetGate
from trioproxy.budget.policy import Policy
from trioproxy.budget.store import StoreUnavailable
from trioproxy.edge.app import Gateway

T = TypeVar("T")


class ActionError(ValueError):
    """A bad admin request (400), or one the gateway cannot serve (``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


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


async def set_override(
    gw: Gateway, store: AdminStore, who: Principal, *, now: float, entry: tuple[str, str],
    action: str, subject: str, old: str, new: str,
) -> None:  # fmt: skip
    """Store one policy override (``entry``, from :mod:`trioproxy.budget.policy`) and audit
    the change as ``action`` on ``subject``, ``old`` → ``new`` as the audit log shows them."""
    await store_call(gw, lambda gate: gate.set_policy(*entry))
    await record_override(gw, store, entry, AuditEntry(now, who.name, action, subject, old, new))


async def record_override(
    gw: Gateway, store: AdminStore, entry: tuple[str, str], audit: AuditEntry
) -> None:
    """After the budget store took ``entry``: its durable copy (outside :func:`store_call`'s
    timeout: a slow admin store is no budget store outage) and the audit line. The change
    applies either way; an :class:`ActionError` (503) names what the admin store did not
    save."""
    missing: list[str] = []
    try:
        await budget_gate(gw).save_override(*entry)
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


async def current_policy(gw: Gateway) -> Policy:
    """The store's overrides now (not a worker's cache): 503 when it does not answer."""
    return Policy.decode(await store_call(gw, lambda gate: gate.store.get_policy()))


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


__all__ = ["ActionError", "FlushResult", "budget_gate", "flush_cache", "record_override"]
