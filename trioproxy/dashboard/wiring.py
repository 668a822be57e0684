"""The admin store in a process, without the dashboard's app (no Quart in a data-plane worker).

Every process of ``serve`` opens the admin store: a data-plane worker to authenticate the
keys made in the dashboard, to record the budget alerts it fires (:class:`AlertLog`), to keep
budget overrides across a Redis state loss and to write its heartbeat; the control-plane
process to serve the dashboard from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from trioproxy.admin.store import AdminStore, StoreError
from trioproxy.budget.alerts import Alert, Delivery
from trioproxy.budget.overrides import write_back_safe
from trioproxy.dashboard import freshness
from trioproxy.edge.app import Gateway
from trioproxy.edge.services import NamedService

log = logging.getLogger(__name__)


class AlertLog:
    """``AlertHistory`` over the admin store; a failed write is logged, never raised."""

    def __init__(self, store: AdminStore) -> None:
        self.store = store

    async def alert_fired(self, alert: Alert, delivery: Delivery) -> int | None:
        try:
            return await self.store.record_alert(
                alert.at, alert.team, alert.budget, alert.level, alert.threshold,
                round(alert.spent_usd * 1e6), round(alert.limit_usd * 1e6), delivery,
            )  # fmt: skip
        except (StoreError, trio.TooSlowError) as exc:
            log.warning("alert of %s not recorded: %s", alert.budget, exc)
            return None

    async def delivery_done(
        self, ref: int, delivery: Delivery, attempts: int, last_error: str | None, at: float
    ) -> None:
        try:
            await self.store.alert_delivered(ref, delivery, attempts, last_error, at)
        except (StoreError, trio.TooSlowError) as exc:
            log.warning("delivery of alert %d not recorded: %s", ref, exc)


def open_admin_store(gateway: Gateway) -> AdminStore:
    """Open the store ``[storage]`` names and hand it to the gateway's parts that read it."""
    storage = gateway.settings.storage
    db_url = storage.database_url.reveal() if storage.database_url is not None else None
    store = AdminStore.open_sync(storage.state_dir, db_url)
    gateway.keys.source = store  # keys created in the dashboard authenticate on every worker
    gate = gateway.admission.gate if gateway.admission is not None else None
    if gate is not None and gate.alerts is not None:
        gate.alerts.history = AlertLog(store)  # the Alerts page lists what the workers fire
    if gateway.admission is not None and gateway.admission.gate.recovery is not None:
        redis_url = storage.redis_url.reveal() if storage.redis_url is not None else None
        if write_back_safe(db_url, redis_url):
            gateway.admission.gate.recovery.overrides = store  # survive a Redis state loss
        else:
            log.warning(
                "budget overrides set from the dashboard are not kept across a Redis state "
                "loss: Redis is reached over the network but the admin store is this host's "
                "SQLite file (another host's newer override could be undone); set "
                "storage.database_url to keep them"
            )
    return store


def hold_store(
    gateway: Gateway, store: AdminStore, clock: Callable[[], float], *, heartbeat: bool
) -> None:
    """The store's lifetime in the app (closed when it stops) and, for a data-plane worker
    (``heartbeat``), its heartbeat."""
    beat = freshness.HeartbeatService(gateway, store, clock=clock, worker=freshness.worker_id())
    if heartbeat:
        gateway.services.add(NamedService("dashboard-heartbeat", beat.run, required=False))
    gateway.services.add(NamedService("dashboard-store", beat.hold_store, required=False))


__all__ = ["AlertLog", "hold_store", "open_admin_store"]
