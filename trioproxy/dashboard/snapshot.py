"""What the dashboard shows, read from the running gateway: plain values, no HTML.

Sources: the budget gate (run-time limits, and spend incl. reservations from
the budget store), the ledger roll-up (requests, tokens, cost, saved; UTC days),
the breakers, the request handler's in-flight count and the response cache.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import trio

from trioproxy.admin.store import AdminStore
from trioproxy.budget import buckets
from trioproxy.budget.alerts import AlertStatistics
from trioproxy.budget.gate import BudgetGate
from trioproxy.budget.periods import PeriodKind, period_at
from trioproxy.budget.store import StoreUnavailable
from trioproxy.dashboard.spend import Totals
from trioproxy.dashboard.traffic import WINDOWS_MIN, Traffic
from trioproxy.dashboard.traffic import fold as fold_traffic
from trioproxy.edge.app import Gateway
from trioproxy.edge.metrics import ALERT_SERIES
from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.days import DayRow
from trioproxy.ledger.reads import DayCells
from trioproxy.ledger.service import LedgerService

log = logging.getLogger(__name__)


def per_team(rows: Sequence[DayRow]) -> dict[str, Totals]:
    """Day roll-up rows (``dim = 'team'``) summed per team."""
    out: dict[str, Totals] = {}
    for r in rows:
        out.setdefault(r.value, Totals()).add(r)
    return out


@dataclass(frozen=True, slots=True)
class Usage:
    """One budget period of a team: limit and spend (incl. open reservations), USD."""

    limit_usd: float | None
    spent_usd: float | None
    """With a limit: the budget store's spend + open reservations; without one (the store
    tracks nothing): what the ledger has recorded for the period; None when neither answers."""
    threshold: float | None
    """The alert threshold in force (a share of the limit); None: alerts off."""

    @property
    def share(self) -> float | None:
        if self.limit_usd is None or self.spent_usd is None:
            return None
        return self.spent_usd / self.limit_usd if self.limit_usd > 0 else 1.0

    @property
    def level(self) -> str:
        """``ok``, ``alert`` (at or past the threshold) or ``limit`` (exhausted)."""
        share = self.share
        if share is not None and share >= 1.0:
            return "limit"
        if share is None or self.threshold is None or share < self.threshold:
            return "ok"
        return "alert"


@dataclass(frozen=True, slots=True)
class TeamRow:
    team: str
    today: Usage
    month: Usage
    ledger_today: Totals
    ledger_month: Totals


@dataclass(frozen=True, slots=True)
class Overview:
    teams: list[TeamRow]
    alerts: AlertStatistics | None
    """The alert sender's counts (every team's); None without alerts, or for some teams."""
    ledger: bool
    """False when the gateway has no ledger (the roll-up columns are then empty)."""


def ledger_of(gw: Gateway) -> LedgerBackend | None:
    """The durable ledger behind the gateway; None when its sink is not the ledger (tests)."""
    sink = gw.ledger
    if isinstance(sink, LedgerService) and sink.writer is not None:
        return sink.writer.backend
    return None


def gate_of(gw: Gateway) -> BudgetGate | None:
    return gw.admission.gate if gw.admission is not None else None


async def alert_statistics(gw: Gateway) -> AlertStatistics | None:
    """The budget alert sender's counts summed over the data plane (the workers check and
    fire alerts; a control-plane process's own sender stays idle), from the metrics every
    worker writes: since the service started, the queue over live workers. None without
    alerts."""
    gate = gate_of(gw)
    if gate is None or gate.alerts is None:
        return None
    gw.sample_metrics()  # this process's own sender, where it serves requests (tests, 1 process)
    t = await trio.to_thread.run_sync(gw.prometheus.totals, ALERT_SERIES)
    queued, dropped, fired, failures = (int(t[name]) for name in ALERT_SERIES)
    return AlertStatistics(queued, dropped, fired, failures)


def utc_day_start(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def known_teams(gw: Gateway, *more: Sequence[str]) -> list[str]:
    teams = set(gw.settings.budgets.teams) | {k.team for k in gw.settings.api_keys.values()}
    for extra in more:
        teams.update(extra)
    return sorted(teams)


TEAM_LOOKBACK_DAYS = 62
"""Teams with spend in the ledger over this many days count as known (besides config)."""


async def all_teams(gw: Gateway, teams: Sequence[str] | None = None) -> list[str]:
    """Every team with a key (config or dashboard), a configured budget, or spend in the
    last two months; of ``teams`` only when given (a principal's scope: the ledger is read
    for them only)."""
    today = dt.datetime.now(zone(gw)).date()
    rows = await days(
        gw, "team", today - dt.timedelta(days=TEAM_LOOKBACK_DAYS), today, teams, keep=("value",)
    )
    store = gw.keys.source
    created = await store.key_teams() if isinstance(store, AdminStore) else []
    found = known_teams(gw, [r.value for r in rows], created)
    return found if teams is None else [t for t in found if t in teams]


def zone(gw: Gateway) -> ZoneInfo:
    return ZoneInfo(gw.settings.budgets.timezone)


async def days(
    gw: Gateway,
    dim: str,
    first: dt.date,
    last: dt.date,
    teams: Sequence[str] | None = None,
    keep: Sequence[str] = ("day", "value"),
    values: Sequence[str] | None = None,
) -> list[DayRow]:
    """The day roll-up by ``dim`` for local days ``first``..``last`` of the configured zone,
    summed per what ``keep`` names (day, value, team, status) in the database."""
    backend = ledger_of(gw)
    if backend is None:
        return []
    return await backend.query_days(
        dim=dim, first=first, last=last, zone=gw.settings.budgets.timezone, teams=teams,
        keep=keep, values=values,
    )  # fmt: skip


async def day_cells(
    gw: Gateway, dim: str, first: dt.date, last: dt.date, teams: Sequence[str] | None = None
) -> list[DayCells]:
    """Per local day and value of ``dim``: the Spend CSV's cells, summed in the database."""
    backend = ledger_of(gw)
    if backend is None:
        return []
    return await backend.day_cells(dim=dim, first=first, last=last,
                                   zone=gw.settings.budgets.timezone, teams=teams)  # fmt: skip


async def spent_usd(gate: BudgetGate, team: str, kind: PeriodKind, tz: ZoneInfo) -> float | None:
    """A team's spend + reservations in the current period, from the budget store."""
    now = gate.clock()
    bucket = buckets.team_period(team, kind, period_at(kind, now, tz).name)
    with trio.move_on_after(gate.outage.call_timeout_s):
        try:
            return await gate.store.usage(bucket, now=now) / 1e6
        except StoreUnavailable:
            return None
    return None


LEDGER_READ_TIMEOUT_S = 2.0
"""The longest a page waits for the ledger's spend of a team without a limit ("-" after)."""


async def ledger_spent_usd(gw: Gateway, team: str, kind: PeriodKind) -> float | None:
    """A team's spend in the current local day or month as the ledger recorded it (a team
    without a limit for the period: the budget store keeps no count of it); None when the
    ledger does not answer within :data:`LEDGER_READ_TIMEOUT_S` or fails (the page shows
    "-", as for a budget store that does not answer)."""
    if ledger_of(gw) is None:
        return None
    today = dt.datetime.now(dt.UTC).astimezone(zone(gw)).date()
    first = today if kind == "day" else today.replace(day=1)
    with trio.move_on_after(LEDGER_READ_TIMEOUT_S):
        try:
            rows = await days(gw, "team", first, today, teams=[team])
        except Exception:
            log.warning("the ledger did not answer for team %s's spend", team, exc_info=True)
            return None
        return sum(r.cost_usd for r in rows if r.value == team)
    return None


async def monthly_limit_usd(gw: Gateway, team: str) -> float | None:
    """A team's monthly limit in force (the gate's cached read), without its spend."""
    gate = gate_of(gw)
    if gate is None:
        return None
    try:
        micros = (await gate.team_limits(team)).monthly_micros
    except StoreUnavailable:
        return None
    return None if micros is None else micros / 1e6


async def team_usage(
    gw: Gateway, team: str, recorded: tuple[float, float] | None = None
) -> tuple[Usage, Usage]:
    """A team's day and month against its limits; ``recorded``: the ledger's day and month
    spend when the caller has them already (else read when a period has no limit)."""
    threshold: float | None = gw.settings.budgets.alert_threshold(team)
    gate = gate_of(gw)
    if gate is None:
        return Usage(None, None, threshold), Usage(None, None, threshold)
    threshold = (await gate.policy()).threshold(team, threshold)
    try:
        limits = await gate.team_limits(team)
    except StoreUnavailable:
        return Usage(None, None, threshold), Usage(None, None, threshold)
    tz = ZoneInfo(gw.settings.budgets.timezone)
    periods: tuple[tuple[PeriodKind, int | None], ...] = (
        ("day", limits.daily_micros),
        ("month", limits.monthly_micros),
    )
    out: list[Usage] = []
    for kind, micros in periods:
        if micros is None:
            spent = (
                await ledger_spent_usd(gw, team, kind)
                if recorded is None
                else recorded[0 if kind == "day" else 1]
            )
            out.append(Usage(None, spent, threshold))
        else:
            out.append(Usage(micros / 1e6, await spent_usd(gate, team, kind, tz), threshold))
    return out[0], out[1]


async def overview(
    gw: Gateway, now: dt.datetime | None = None, teams: Sequence[str] | None = None
) -> Overview:
    """Every team's row, or those of ``teams`` only (a principal's scope: the ledger is read
    for them only, and the alert sender's counts, every team's, are left out)."""
    today = (now or dt.datetime.now(dt.UTC)).astimezone(zone(gw)).date()
    # per status too (a handful of rows per team and day): the refusals among the requests
    this_month = await days(gw, "team", today.replace(day=1), today, teams,
                            ("day", "value", "status"))  # fmt: skip
    day_rows = per_team([r for r in this_month if r.day == today])
    month_rows = per_team(this_month)
    backend = ledger_of(gw) is not None
    rows = []
    for team in known_teams(gw, list(month_rows)):
        if teams is not None and team not in teams:
            continue
        today_totals, month_totals = day_rows.get(team, Totals()), month_rows.get(team, Totals())
        day, month = await team_usage(
            gw, team, (today_totals.cost_usd, month_totals.cost_usd) if backend else None
        )
        rows.append(TeamRow(team, day, month, today_totals, month_totals))
    alerts = await alert_statistics(gw) if teams is None else None
    return Overview(rows, alerts, backend)


@dataclass(frozen=True, slots=True)
class ProviderRow:
    target: str
    provider: str
    deployment: str
    state: str
    """``closed`` (healthy), ``failing`` (failures counted, still closed), ``open`` or
    ``probing`` (open, one probe in flight)."""
    failures: int
    opened_for_s: float | None
    """How long it has been open (None: closed, or opened before this was tracked)."""
    next_probe_in_s: float | None
    """Until the cool-down ends and one probe may go (None: closed)."""


@dataclass(frozen=True, slots=True)
class Providers:
    rows: list[ProviderRow]
    in_flight: int
    max_in_flight: int


async def providers(gw: Gateway) -> Providers:
    """Every target's breaker, as the shared store holds it (the control-plane process sends
    no requests, so it reads them), and the requests in flight on every worker."""
    await gw.breakers.refresh(sorted(gw.settings.models))
    snap = gw.breakers.snapshot(trio.current_time())
    rows = []
    for name, model in sorted(gw.settings.models.items()):
        s = snap.get(name, {})
        failures = int(s.get("failures", 0))  # type: ignore[call-overload]
        is_open = bool(s.get("open", False))
        state = "open" if is_open else ("failing" if failures else "closed")
        if is_open and s.get("probing"):
            state = "probing"
        opened = s.get("opened_for_s")
        opened_for = float(opened) if is_open and isinstance(opened, int | float) else None
        probe = s.get("next_probe_in_s")
        next_probe = float(probe) if is_open and isinstance(probe, int | float) else None
        rows.append(ProviderRow(name, model.provider, model.deployment, state, failures,
                                opened_for, next_probe))  # fmt: skip
    return Providers(rows, gw.in_flight, gw.settings.server.max_in_flight)


async def traffic(
    gw: Gateway, now: float, teams: Sequence[str] | None = None
) -> dict[str, list[Traffic]]:
    """Per target, its traffic over the last 5 and 60 minutes (per-minute counters): every
    team's, or the attempts of ``teams``' requests only (summed in the database)."""
    backend = ledger_of(gw)
    this_minute = int(now // 60)
    rows = [] if backend is None else await backend.query_minutes(
        first_minute=this_minute - max(WINDOWS_MIN) + 1, end_minute=this_minute + 1, teams=teams
    )  # fmt: skip
    return fold_traffic(rows, sorted(gw.settings.models), now)


def cached_routes(gw: Gateway) -> list[str]:
    return sorted(
        name
        for name, route in gw.settings.routes.items()
        if route.cache.exact_ttl_s > 0 or route.cache.semantic_ttl_s > 0
    )


__all__ = [
    "Overview",
    "ProviderRow",
    "Providers",
    "TeamRow",
    "Totals",
    "Usage",
    "all_teams",
    "cached_routes",
    "known_teams",
    "ledger_of",
    "monthly_limit_usd",
    "overview",
    "providers",
    "team_usage",
    "traffic",
    "zone",
]
