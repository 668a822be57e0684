"""Build the app of one server worker: the production wiring of every part.

``trioproxy serve`` resolves the config once, then hands the workers the environment
variables ``environ.py`` names (set by the CLI, read here at worker start-up only):
``TRIOPROXY_CONFIG`` (a TOML path) or, for the demo, ``TRIOPROXY_DEMO_SIM_URL``
and ``TRIOPROXY_DEMO_KEY``.

State lives in the embedded stores under ``storage.state_dir`` (SQLite in WAL
mode, shared by every worker of the host) unless ``storage.redis_url`` is set,
in which case budgets go to Redis and are shared by every instance.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import trio

from trioproxy.breakers.shared import RedisBreakerKV, SharedBreakers, SqliteBreakerKV
from trioproxy.budget.alerts import AlertSink
from trioproxy.budget.gate import BudgetGate, OutagePolicy
from trioproxy.budget.settle_retry import SettleRetries
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.budget.store import BudgetStore
from trioproxy.config.model import BudgetsConfig, Settings
from trioproxy.core.backoff import Backoff, BackoffPolicy
from trioproxy.edge.app import Gateway, create_app
from trioproxy.edge.reload import ReloadSource
from trioproxy.edge.services import NamedService, Service
from trioproxy.ledger.service import LedgerService
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.dead_reservations import DeadReservations
from trioproxy.server.cache_commands import RelayedCache, applier
from trioproxy.server.cache_service import response_cache
from trioproxy.server.config_snapshot import ConfigFile
from trioproxy.server.environ import ENV_CONFIG, ENV_LOG_FORMAT, ENV_LOG_LEVEL, settings_from_env
from trioproxy.server.readiness import ENV_RUN_DIR, DataPlaneView, ReadyDir, reporter
from trioproxy.store.resp import RedisUnavailable
from trioproxy.store.state_dir import EXIT_STATE_DISK, StateWatch, start_failure
from trioproxy.telemetry.line_batch import line_batch
from trioproxy.telemetry.logs import configure_logging
from trioproxy.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from trioproxy.budget.recovery import Recovery
    from trioproxy.store.redis_client import RedisClient

log = logging.getLogger(__name__)
TRACE_FLUSH_TIMEOUT_S = 5.0
"""Longest wait for the span exporter to flush at shutdown."""
REDIS_RETRY = BackoffPolicy(0.2, 5.0)
"""Between attempts to reach Redis at start-up (the client's own reconnects: its settings)."""


def redis_client(settings: Settings, services: list[NamedService]) -> RedisClient | None:
    url = settings.storage.redis_url
    if url is None:
        return None
    from trioproxy.store.redis_client import RedisClient  # (hiredis: only with Redis)

    # each caller bounds its own calls (budgets: ``store_timeout_s``; the cache: its lookup
    # bound); the client's own per-call timeout must not cut a longer one short
    client = RedisClient(url.reveal(), call_timeout=max(1.0, settings.budgets.store_timeout_s))
    services.append(NamedService("redis", _supervised(client)))
    return client


def _supervised(client: RedisClient) -> Service:
    """Start at once even if Redis is down; keep (re)connecting with backoff.

    While Redis is unreachable its users see ``RedisUnavailable`` at once and apply
    their outage policy (budgets: fail closed or open; cache: miss; breakers:
    the local view), so the gateway serves or refuses cleanly and recovers by itself.
    """

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = Backoff(REDIS_RETRY)
        while True:
            try:
                await client.run()
                return
            except RedisUnavailable as exc:
                delay = backoff.next()
                log.warning("redis unreachable (%s); retrying in %.1f s", exc, delay)
                await trio.sleep(delay)

    return run


def budget_store(settings: Settings, redis: RedisClient | None) -> BudgetStore:
    if redis is not None:
        from trioproxy.budget.redis_store import RedisStore

        return RedisStore(redis)
    state = Path(settings.storage.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    return SqliteStore(str(state / "budgets.sqlite3"))


def shared_breakers(settings: Settings, redis: RedisClient | None) -> SharedBreakers:
    if redis is not None:
        return SharedBreakers(RedisBreakerKV(redis), settings.breaker)
    state = Path(settings.storage.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    return SharedBreakers(SqliteBreakerKV(str(state / "breakers.sqlite3")), settings.breaker)


def alert_sink(settings: Settings, store: BudgetStore, services: list[NamedService]) -> AlertSink:
    alerts = AlertSink(store, webhook_url=settings.budgets.webhook_url)
    services.append(NamedService("budget-alerts", alerts.run, required=False))
    return alerts


def recovery(
    settings: Settings, store: BudgetStore, sink: object, services: list[NamedService],
    budgets: Callable[[], BudgetsConfig] | None = None,
) -> Recovery | None:  # fmt: skip
    """A Redis store's state-loss recovery, reading the ledger when ``sink`` is the
    gateway's own ledger (a test's list sink: nothing to rebuild from). ``budgets``: the
    budgets config in force (the gateway's, after each reload; default: ``settings``')."""
    if settings.storage.redis_url is None:  # (the Redis modules are loaded with Redis only)
        return None
    from trioproxy.budget.recovery import Recovery, SpendSource
    from trioproxy.budget.redis_store import RedisStore
    from trioproxy.ledger.spend import LedgerSpend

    if not isinstance(store, RedisStore):
        return None

    def source() -> SpendSource | None:
        if isinstance(sink, LedgerService) and sink.writer is not None:
            return LedgerSpend(sink.writer.backend)
        return None

    b = settings.budgets
    rec = Recovery(
        store, budgets or (lambda: b), source, lease_s=b.reservation_lease_s,
        call_timeout_s=b.store_timeout_s,
    )  # fmt: skip
    services.append(NamedService("budget-recovery", rec.run))
    return rec


def settle_retries(services: list[NamedService]) -> SettleRetries:
    """The process's queue of settles the budget store did not take, and its service
    (:mod:`trioproxy.budget.settle_retry`), shared by every reload's gate."""
    settles = SettleRetries()
    services.append(NamedService("budget-settles", settles.run, required=False))
    return settles


def admission(
    settings: Settings, store: BudgetStore, alerts: AlertSink, recovery: Recovery | None = None,
    settles: SettleRetries | None = None,
) -> Admission:  # fmt: skip
    """The budget gate for ``settings.budgets`` over ``store`` (also on every reload)."""
    gate = BudgetGate(
        settings.budgets,
        store,
        outage=OutagePolicy(
            mode=settings.budgets.on_store_outage, call_timeout_s=settings.budgets.store_timeout_s
        ),
        lease_s=settings.budgets.reservation_lease_s,
        alerts=alerts,
        recovery=recovery,
        settles=settles,
    )
    return Admission(gate)


def _flush_on_shutdown(tracing: Tracing) -> Service:
    """Export the spans still buffered when the app stops (bounded; off: nothing to do)."""

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            if tracing.enabled:
                with trio.CancelScope(shield=True), trio.move_on_after(TRACE_FLUSH_TIMEOUT_S):
                    await trio.to_thread.run_sync(tracing.shutdown, abandon_on_cancel=True)

    return run


Role = Literal["all", "worker", "control"]
"""``all``: both planes in one process (tests, embedding); ``worker``: a data-plane worker of
``serve`` (no dashboard app: the admin store for keys, overrides, its heartbeat, its state
file and the cache commands); ``control``: the control-plane process (``control.py``)."""


def build_gateway(
    settings: Settings, *, config_path: str | None = None, role: Role = "all",
    run_dir: str | None = None, **overrides: Any,
) -> Gateway:  # fmt: skip
    """Every part wired for ``settings``; ``overrides`` replace parts (tests). With
    ``config_path``, ``gateway.reload()`` re-reads that file. ``run_dir``: the run directory
    of ``serve`` (the workers' state files, ``readiness.py``)."""
    services: list[NamedService] = []
    parts: dict[str, Any] = {}
    redis = redis_client(settings, services)
    store = budget_store(settings, redis)
    alerts = alert_sink(settings, store, services)
    if "sink" not in overrides:
        ledger = LedgerService(settings.storage, zone=settings.budgets.timezone)
        services.insert(0, NamedService("ledger", ledger.run))
        parts["sink"] = ledger
    sink = overrides.get("sink", parts.get("sink"))
    built: list[Gateway] = []  # the gateway, once built: its settings follow each reload

    def budgets_in_force() -> BudgetsConfig:
        return built[0].settings.budgets if built else settings.budgets

    budget_recovery = recovery(settings, store, sink, services, budgets_in_force)
    settles = settle_retries(services)
    parts["admission"] = admission(settings, store, alerts, budget_recovery, settles)
    if role != "control":  # the control plane loads no embedder or index (cache_commands.py)
        parts["cache"] = response_cache(settings, services, redis)
    parts["breakers"] = shared_breakers(settings, redis)
    if "tracing" not in overrides:
        parts["tracing"] = Tracing.from_config(settings.telemetry)
    parts.update(overrides)
    services.append(NamedService("trace-flush", _flush_on_shutdown(parts["tracing"]), False))
    if (lines := line_batch()) is not None:  # access lines: one write per scheduler turn
        services.insert(0, NamedService("log-lines", lines.run, required=False))
    every = [*services, *parts.pop("services", [])]
    gateway: Gateway
    if role == "control":
        from trioproxy.server.control import ControlGateway

        view = DataPlaneView(ReadyDir(run_dir or settings.storage.state_dir))
        gateway = ControlGateway(settings, data_plane=view, services=every, **parts)
    else:
        gateway = create_app(settings, services=every, **parts)
    built.append(gateway)  # a rebuild reads the windows of the config in force
    gateway.state_watch = watch = StateWatch(settings.storage.state_dir)
    gateway.services.add(NamedService("state-watch", watch.run, required=False))
    if isinstance(journaled := parts.get("sink"), LedgerService):  # a dead process's
        dead = DeadReservations(lambda: gateway.admission)  # open reservations, settled
        journaled.on_recovered = dead.hand
        gateway.services.add(NamedService("dead-reservations", dead.run, required=False))
        if role != "control":  # a running stream's provisional records kept up to date
            progress = gateway.progress.run
            gateway.services.add(NamedService("stream-progress", progress, required=False))
    if config_path is not None:
        source = ConfigFile(config_path, run_dir)
        gateway.reload_source = ReloadSource(
            load=source.load,
            keep=source.keep,
            admission=functools.partial(
                admission,
                store=store,
                alerts=alerts,
                recovery=budget_recovery,
                settles=settles,
            ),
        )
    if role == "worker":
        _wire_worker(gateway, run_dir)
        return gateway
    try:
        from trioproxy.dashboard.app import mount_dashboard

        app = mount_dashboard(gateway, heartbeat=role == "all")
    except Exception:  # the dashboard is optional; the proxy, /metrics and the probes are not
        # (a control plane that died of it would be restarted until the service stops)
        log.exception("dashboard not mounted (the proxy serves /v1 and the admin port "
                      "/metrics and the probes without it)")  # fmt: skip
        return gateway
    if role == "control" and settings_cache(settings):
        gateway.cache = RelayedCache(app.extensions["trioproxy_access"].store)  # type: ignore[assignment]
    return gateway


def settings_cache(settings: Settings) -> bool:
    """Does any route cache answers?"""
    return any(r.cache.exact_ttl_s > 0 or r.cache.semantic_ttl_s > 0
               for r in settings.routes.values())  # fmt: skip


def _wire_worker(gateway: Gateway, run_dir: str | None) -> None:
    """A data-plane worker's share of the control plane, without the dashboard's app."""
    from trioproxy.dashboard.freshness import own_state
    from trioproxy.dashboard.wiring import hold_store, open_admin_store

    try:
        store = open_admin_store(gateway)
    except Exception:  # as without a dashboard: the proxy serves /v1 without the admin store
        log.exception("admin store not opened (dashboard keys and heartbeats are off)")
        return
    hold_store(gateway, store, time.time, heartbeat=True)
    if gateway.cache is not None:
        run = applier(gateway.cache, store, lambda: gateway.settings)
        gateway.services.add(NamedService("cache-commands", run, required=False))
    if run_dir is not None:
        report = reporter(ReadyDir(run_dir), lambda: own_state(gateway),
                          lambda: gateway.in_flight, gateway.drain_started)  # fmt: skip
        gateway.services.add(NamedService("ready-report", report, required=False))


def from_env(role: Role = "worker") -> Gateway:
    """The gateway of a process of ``serve`` (a worker: ``python -m trioproxy.server.worker``;
    the control plane: ``python -m trioproxy.server.control``): the config, log level and
    format its ``serve`` master resolved, handed over in the environment. Its state stores
    not opening for the disk (full, read-only) is one error line naming the state directory
    and exit status :data:`~trioproxy.store.state_dir.EXIT_STATE_DISK`: it was a critical
    traceback per try, 12 in all, no line naming the disk (review)."""
    configure_logging(  # a worker logs exactly like a single process
        os.environ.get(ENV_LOG_LEVEL, "info"), os.environ.get(ENV_LOG_FORMAT, "auto")
    )
    settings = settings_from_env()
    try:
        return build_gateway(
            settings, config_path=os.environ.get(ENV_CONFIG) or None, role=role,
            run_dir=os.environ.get(ENV_RUN_DIR) or None,
        )  # fmt: skip
    except (OSError, sqlite3.Error) as exc:  # a full or read-only state disk: one line
        why = start_failure(exc, settings.storage.state_dir)
        if why is None:
            raise
        log.error("%s", why)
        raise SystemExit(EXIT_STATE_DISK) from None


__all__ = ["Role", "build_gateway", "from_env", "settings_cache"]
