"""A running gateway's config reload (SIGHUP): read and check the file in a thread, set up
what a change of providers needs, then let :meth:`Gateway.apply
<trioproxy.edge.app.Gateway.apply>` swap the request-path parts in one step. One reload at a
time (the gateway's lock); requests in flight finish on the config they started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from trioproxy.budget.limits import Limits
from trioproxy.budget.store import LIMIT_FIELDS, StoreUnavailable, overridden_fields
from trioproxy.config.budgets import BudgetsConfig
from trioproxy.config.model import Settings
from trioproxy.config.validate import ConfigError
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import ResponseCache
from trioproxy.upstream.transport import HttpTransport

if TYPE_CHECKING:
    from trioproxy.edge.app import Gateway

log = logging.getLogger("trioproxy")
RESTART_ONLY = ("server", "storage", "breaker", "embedder")
"""Sections a reload does not apply (sockets, stores, breaker state, the embedder): logged."""


@dataclass(frozen=True, slots=True)
class ReloadSource:
    """How a running gateway re-reads its config; set by the server wiring."""

    load: Callable[[], Settings]
    """Reads and validates the config file (blocking; raises :class:`ConfigError`)."""
    admission: Callable[[Settings], Admission | None]
    """The budget gate for the new limits, over the same store."""
    keep: Callable[[], None] = lambda: None
    """Called (in a thread) once the loaded config is applied: ``serve`` makes it the one a
    restarted process starts on (:mod:`trioproxy.server.config_snapshot`)."""


def needs_restart(old: Settings, new: Settings, cache: ResponseCache | None) -> list[str]:
    """What of ``new`` waits for a restart: the :data:`RESTART_ONLY` sections it changes, and
    a cache this process did not open at its start (no route had one, or none a semantic one:
    its stores and services start with the process; routes keep what is open meanwhile)."""
    later = [s for s in RESTART_ONLY if getattr(new, s) != getattr(old, s)]
    caches = [r.cache for r in new.routes.values()]
    if getattr(cache, "relayed", False):  # the control plane's: the workers decide
        return later
    if cache is None:
        missing = any(c.exact_ttl_s > 0 or c.semantic_ttl_s > 0 for c in caches)
    else:
        missing = cache.semantic is None and any(c.semantic_ttl_s > 0 for c in caches)
    return [*later, "routes.*.cache"] if missing else later


async def reload_from(gateway: Gateway, source: ReloadSource) -> bool:
    """Load, check and apply ``source``'s config to ``gateway``; whether it was applied (an
    invalid file, or a provider that cannot be set up, is logged and changes nothing)."""
    try:
        settings = await trio.to_thread.run_sync(source.load)
    except ConfigError as exc:
        log.error(
            "reload refused: the config has %d problem(s); the running config stays",
            len(exc.problems), extra={"fields": {"problems": exc.problems}},
        )  # fmt: skip
        return False
    transport = None
    if settings.providers != gateway.settings.providers:
        try:  # TLS contexts load CA bundles: blocking, so in a thread, once
            transport = await trio.to_thread.run_sync(HttpTransport, settings.providers)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("reload refused: a provider cannot be set up (%s); the running "
                      "config stays", exc)  # fmt: skip
            return False
    later = needs_restart(gateway.settings, settings, gateway.cache)
    previous = gateway.settings.budgets
    gateway.apply(settings, source.admission(settings), transport)
    await trio.to_thread.run_sync(source.keep)
    log.info(
        "config reloaded", extra={"fields": {
            "keys": len(settings.api_keys), "routes": len(settings.routes),
            "models": len(settings.models), "needs_restart": later,
        }},
    )  # fmt: skip
    if later:
        log.warning("reload: [%s] changed; applied at the next restart", "], [".join(later))
    if gateway.admission is not None:
        await log_kept_overrides(previous, settings.budgets, gateway.admission.gate.limits)
    return True


async def log_kept_overrides(old: BudgetsConfig, new: BudgetsConfig, limits: Limits) -> None:
    """Warn of each team limit the reload changed in the config that a run-time override
    keeps in force (the other limits follow the new config): one line per team, with the
    fields kept. A budget store that does not answer: said once, nothing else."""
    for team in sorted(set(old.teams) | set(new.teams)):
        was, now = _usd(old, team), _usd(new, team)
        changed = [f for f in LIMIT_FIELDS if was[f] != now[f]]
        if not changed:
            continue
        try:
            stored = await limits.stored(team)
        except StoreUnavailable:  # (stored() answers the last read instead: not raised)
            return
        kept = [f for f in changed if f in overridden_fields(stored)]
        if not kept:
            continue
        held = {"daily": stored.daily_micros, "monthly": stored.monthly_micros} if stored else {}
        log.warning(
            "reload: team %s keeps its run-time %s limit override over the changed config "
            "(%s); drop it with 'Use config' on the Budgets page or the admin API's "
            '{"<field>_usd": "config"}',
            team, " and ".join(kept),
            "; ".join(f"{f}: config {_text(now[f])}, in force {_micros_text(held.get(f))}"
                      for f in kept),
            extra={"fields": {"team": team, "kept_overrides": kept}},
        )  # fmt: skip


def _usd(cfg: BudgetsConfig, team: str) -> dict[str, float | None]:
    tb = cfg.teams.get(team)
    if tb is None:
        return {"daily": None, "monthly": None}
    return {"daily": tb.daily_usd, "monthly": tb.monthly_usd}


def _text(usd: float | None) -> str:
    return "none" if usd is None else f"${usd:g}"


def _micros_text(micros: int | None) -> str:
    return "none" if micros is None else f"${micros / 1e6:g}"


__all__ = ["RESTART_ONLY", "ReloadSource", "log_kept_overrides", "needs_restart", "reload_from"]
