"""What the Cache page shows: hit rate by kind (exact / semantic) per day, dollars saved,
totals per route and per team and route (the day roll-up by route and cache status, days in
the configured zone), and the store's entries and size against its bound (this process).
A principal of some teams gets its teams' rows only (read for them only) and not the store's
figures, which are every team's.

Pure folding (:func:`fold`) over roll-up rows; two grouped reads per view (per day and per
team), a few hundred rows whatever the traffic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from markupsafe import Markup

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.cache.cache_file import FILE_NAME, MAX_ROWS, read_totals
from trioproxy.config.model import RouteConfig
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.actions import ActionError, FlushResult, flush_cache
from trioproxy.dashboard.charts import colour, stacked_bars
from trioproxy.dashboard.spend import Range
from trioproxy.edge.app import Gateway
from trioproxy.ledger.days import DayRow, split_route_cache
from trioproxy.pipeline.caching import team_namespace

WINDOW_DAYS = 14


@dataclass(slots=True)
class Counts:
    exact: int = 0
    semantic: int = 0
    miss: int = 0
    bypass: int = 0
    saved_micros: int = 0

    def add(self, status: str, requests: int, saved_micros: int) -> None:
        """Count ``requests`` of cache outcome ``status``; "off" (a route without a cache,
        or a request it cannot hold) is no lookup and counted nowhere."""
        if status in ("exact", "semantic", "miss", "bypass"):
            setattr(self, status, getattr(self, status) + requests)
        self.saved_micros += saved_micros

    @property
    def lookups(self) -> int:
        return self.exact + self.semantic + self.miss

    def rate(self, kind: str) -> float | None:
        """Share of lookups answered by ``kind`` (``exact``, ``semantic`` or ``hits``)."""
        if not self.lookups:
            return None
        hits = self.exact + self.semantic if kind == "hits" else getattr(self, kind)
        return float(hits / self.lookups)

    @property
    def saved_usd(self) -> float:
        return self.saved_micros / 1e6


@dataclass(slots=True)
class CacheView:
    days: list[dt.date]
    total: Counts = field(default_factory=Counts)
    per_day: dict[dt.date, Counts] = field(default_factory=dict)
    per_route: dict[str, Counts] = field(default_factory=dict)
    per_team_route: dict[tuple[str, str], Counts] = field(default_factory=dict)

    def series(self) -> dict[str, list[float]]:
        """Hit rate (percent) per day, by kind."""
        out: dict[str, list[float]] = {"exact": [], "semantic": []}
        for day in self.days:
            c = self.per_day.get(day, Counts())
            for kind in out:
                out[kind].append(100 * (c.rate(kind) or 0.0))
        return out


def fold(per_day: Iterable[DayRow], per_team: Iterable[DayRow], rng: Range) -> CacheView:
    """Day roll-up rows by ``route_cache``: per day (day, value) and per team over the range
    (value, team), into days, routes, teams."""
    view = CacheView(rng.days)
    for r in per_day:
        if rng.start <= r.day <= rng.end:
            _, status = split_route_cache(r.value)
            view.per_day.setdefault(r.day, Counts()).add(status, r.requests, r.saved_micros)
    for r in per_team:
        route, status = split_route_cache(r.value)
        for counts in (
            view.total,
            view.per_route.setdefault(route, Counts()),
            view.per_team_route.setdefault((r.team, route), Counts()),
        ):
            counts.add(status, r.requests, r.saved_micros)
    return view


def routes_off(gw: Gateway, view: CacheView) -> list[str]:
    """The routes without a cache now that had no lookup in the view (every route of the
    config, and any other the ledger names): listed apart, not as rows of zeros."""
    cached = set(snapshot.cached_routes(gw))
    return sorted(
        route
        for route in set(gw.settings.routes) | set(view.per_route)
        if route not in cached and not view.per_route.get(route, Counts()).lookups
    )


def percent_axis(v: float) -> str:
    return f"{v:.0f}%" if v >= 10 or v == 0 else f"{v:.1f}%"


def shared_by_every_team(route: RouteConfig) -> bool:
    """A route whose cache keeps one set of answers for every team (``scope = "global"``):
    flushing or deleting them is for a principal of every team."""
    return route.cache.scope == "global"


def flushable_routes(gw: Gateway, who: Principal) -> list[str]:
    """The cached routes ``who`` may flush (the form's choices)."""
    routes = gw.settings.routes
    return [
        name
        for name in snapshot.cached_routes(gw)
        if who.every_team or not shared_by_every_team(routes[name])
    ]


def visible_namespaces(gw: Gateway, who: Principal, teams: Iterable[str]) -> set[str]:
    """The exact-cache namespaces of the teams ``who`` sees, on every cached route; for a
    principal of some teams, not a global route's (its namespace is every team's)."""
    out = set()
    for route in gw.settings.routes.values():
        if not who.every_team and shared_by_every_team(route):
            continue
        for team in teams:
            if who.may_see(team):
                out.add(team_namespace(team, route))
    return out


async def flush_entries(
    gw: Gateway, store: AdminStore, who: Principal, team: str, route_name: str, now: float
) -> FlushResult:
    """Flush ``team``'s cached answers on ``route_name``, audited; raises
    :class:`ActionError` (404 a team ``who`` does not see; 403 for a principal of some teams,
    a route whose cache every team shares: "its team's" answers there are every team's;
    :func:`flush_cache`'s)."""
    if team not in await snapshot.all_teams(gw) or not who.may_see(team):
        raise ActionError(f"unknown team {team!r}", 404)
    route = gw.settings.routes.get(route_name)
    if route is not None and not who.every_team and shared_by_every_team(route):
        raise ActionError(
            f"route {route_name!r} caches one set of answers for every team (scope = "
            '"global"): an admin of every team flushes it', 403,
        )  # fmt: skip
    result = await flush_cache(gw, team, route_name)
    await store.audit(AuditEntry(now, who.name, "cache.flush", f"{team}/{result.route}", "",
                                 result.summary()))  # fmt: skip
    return result


ENTRY_MAX = 256
"""Longest entry reference accepted (an ``x-trioproxy-cache-entry`` header is far shorter)."""


async def delete_entry(
    gw: Gateway, store: AdminStore, who: Principal, entry: str, now: float
) -> bool | None:
    """Delete one cached answer by its reference, audited; raises :class:`ActionError`
    (400 malformed, 403 not of ``who``'s teams, 409 no cache). True if it was there; None
    when sent to the workers (the control-plane process: ``server/cache_commands.py``)."""
    if gw.cache is None:
        raise ActionError("the response cache is not enabled on this gateway", 409)
    if ":" not in entry or len(entry) > ENTRY_MAX:
        raise ActionError("paste the x-trioproxy-cache-entry header of the bad answer")
    if who.teams is not None and (
        entry.startswith("s")
        or entry.partition(":")[0] not in visible_namespaces(gw, who, who.teams)
    ):  # semantic references do not name their team; exact ones do, as a digest
        raise ActionError("this entry is not of your teams' (ask an admin of every team)", 403)
    deleted = await gw.cache.delete(entry)
    relayed = getattr(gw.cache, "relayed", False)
    outcome = "sent to every worker" if relayed else "deleted" if deleted else "not found"
    await store.audit(AuditEntry(now, who.name, "cache.delete", entry, "", outcome))
    return None if relayed else deleted


async def cache_context(gw: Gateway, who: Principal) -> dict[str, Any]:
    tz = snapshot.zone(gw)
    today = dt.datetime.now(tz).date()
    rng = Range(today - dt.timedelta(days=WINDOW_DAYS - 1), today)
    backend = snapshot.ledger_of(gw)
    teams = who.scope
    per_day = await snapshot.days(gw, "route_cache", rng.start, rng.end, teams, ("day", "value"))
    per_team = await snapshot.days(gw, "route_cache", rng.start, rng.end, teams,
                                   ("value", "team"))  # fmt: skip
    view = fold(per_day, per_team, rng)
    cache = gw.cache
    semantic = cache.semantic.stats if cache is not None and cache.semantic is not None else None
    exact_stats = getattr(cache.exact, "statistics", None) if cache is not None else None
    bounds = getattr(cache.exact, "bounds", None) if cache is not None else None
    shared = None  # the control plane's view of the host's cache file (the workers serve it)
    storage = gw.settings.storage
    mib = storage.cache_max_mb * 1024 * 1024
    shared_bounds = (storage.cache_max_entries, mib, storage.semantic_max_prompts or MAX_ROWS)
    if who.every_team and getattr(cache, "relayed", False) and storage.redis_url is None:
        path = Path(storage.state_dir) / FILE_NAME
        shared = await trio.to_thread.run_sync(read_totals, path)
    chart = Markup("")
    if view.total.lookups:
        chart = stacked_bars(view.days, view.series(), fmt=percent_axis,
                             label="Cache hit rate per day, by kind")  # fmt: skip
    return {
        "enabled": cache is not None,
        "view": view,
        "chart": chart,
        "legend": [(f"{kind} hits", colour(i, kind)) for i, kind in enumerate(view.series())],
        "window_days": WINDOW_DAYS,
        "tz": tz,
        "ledger": backend is not None,
        "semantic": semantic,
        "writer": cache.writer.statistics() if cache is not None and cache.writer else None,
        "relayed": getattr(cache, "relayed", False),
        "exact": exact_stats() if callable(exact_stats) else None,
        "bounds": bounds,
        "shared": shared,
        "shared_bounds": shared_bounds,
        "prompts_elsewhere": storage.database_url is not None,
        "redis": storage.redis_url is not None,
        "routes": flushable_routes(gw, who),
        "cached_routes": set(snapshot.cached_routes(gw)),
        "routes_off": routes_off(gw, view),
        "teams": await snapshot.all_teams(gw, teams),
    }


__all__ = [
    "WINDOW_DAYS",
    "CacheView",
    "Counts",
    "cache_context",
    "delete_entry",
    "flush_entries",
    "flushable_routes",
    "fold",
    "routes_off",
    "shared_by_every_team",
    "visible_namespaces",
]
