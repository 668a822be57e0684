"""What an admin may change at run time besides budgets (:mod:`.budgets`): cached answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trioproxy.budget.gate import BudgetGate
from trioproxy.edge.app import Gateway


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


@dataclass(frozen=True, slots=True)
class FlushResult:
    team: str
    route: str
    scope: str
    exact: int
    """Exact-cache entries removed."""
    semantic: int | None
    """Semantic entries removed; None when they could not be addressed."""
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    return FlushResult(team, route_name, scope, exact, semantic, None)


__all__ = ["ActionError", "FlushResult", "budget_gate", "flush_cache"]
