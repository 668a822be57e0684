"""Is what the dashboard shows fresh? Server-side checks behind the stale-data banner.

Every gateway worker writes a heartbeat to the admin store every ``HEARTBEAT_S``
(:class:`HeartbeatService`, a service of the app nursery; a clean stop removes it). A store
that refuses it (a full or read-only state disk) is a warning line per 10 s, the service
runs on: it crashed with an error traceback, 12-18 per episode (review). Each
page render (and each panel refresh) checks, cheaply (one small read of the admin store):

* **this gateway's data plane** (its workers, as the control plane reads them): not ready (a required service down, starting, or draining after a stop);
* **the ledger**: its database unreachable (records spool to disk): spend, request and
  cache numbers stop at the last write;
* **the other workers**: one that stopped reporting less than ``FORGET_AFTER_S`` ago
  (crashed or stopped): the numbers that live in each worker (in flight, breaker view)
  miss it.

A gateway that stops altogether takes this page's server with it; the page's script then
shows its own banner when the next refresh fails (``static/dashboard.js``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

import trio

from trioproxy.admin.store import AdminStore, Heartbeat, StoreError
from trioproxy.edge.app import Gateway
from trioproxy.ledger.service import LedgerService
from trioproxy.telemetry.log_every import LogEvery

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
STALE_AFTER_S = 10.0
"""A worker silent this long (five beats) has stopped."""
FORGET_AFTER_S = 600.0
"""A worker silent this long is no longer reported (nor kept): a crashed worker comes back
under a new id (its pid), so an old one is news for a few minutes only."""
FORGET_TIMEOUT_S = 1.0
"""A clean stop removes the worker's heartbeat within this."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def own_state(gw: Gateway) -> tuple[bool, str]:
    """(ready, why not) of this worker."""
    if gw.is_ready():
        return True, ""
    return False, gw.not_ready_reason()


class HeartbeatService:
    def __init__(
        self, gw: Gateway, store: AdminStore, *, clock: Callable[[], float], worker: str
    ) -> None:
        self.gw, self.store, self.clock, self.worker = gw, store, clock, worker
        self.stopped = trio.Event()
        """Set when :meth:`run` has ended (and forgotten this worker's heartbeat)."""
        self.stopped.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.stopped = trio.Event()
        task_status.started()
        refused = LogEvery(clock=trio.current_time)
        failing = False
        try:
            while True:
                ready, detail = own_state(self.gw)
                now = self.clock()
                hb = Heartbeat(self.worker, now, ready, detail)
                try:
                    await self.store.beat(hb, forget_before=now - FORGET_AFTER_S)
                except StoreError as exc:  # a full or read-only disk: expected, it passes
                    failing = True
                    if (skipped := refused.due()) is not None:
                        log.warning("dashboard heartbeat: the admin store refused it: %s (%d "
                                    "more since the last such line)", exc, skipped)  # fmt: skip
                else:
                    if failing:
                        failing = False
                        log.info("dashboard heartbeat: the admin store takes it again")
                await trio.sleep(HEARTBEAT_S)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FORGET_TIMEOUT_S):
                try:
                    await self.store.forget_worker(self.worker)
                except StoreError as exc:
                    log.warning("dashboard heartbeat: could not remove this worker's: %s", exc)
            self.stopped.set()

    async def hold_store(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The store's lifetime in the app: when the app stops, close the store (a
        PostgreSQL pool) once the heartbeat is forgotten."""
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(2 * FORGET_TIMEOUT_S):
                    await self.stopped.wait()
                await trio.to_thread.run_sync(self.store.close)


def stale_reasons(
    *, now: float, me: str, ready: tuple[bool, str], ledger_down: str | None,
    beats: Sequence[Heartbeat], tz: ZoneInfo,
) -> list[str]:  # fmt: skip
    """Why the numbers on the page may be stale (pure); empty when they are fresh."""
    reasons = []
    if not ready[0]:
        reasons.append(f"this gateway's data plane is not ready ({ready[1]})")
    if ledger_down is not None:
        reasons.append(
            "the ledger database is unreachable (records wait on disk): spend, requests and "
            f"cache numbers stop at its last write ({ledger_down})"
        )
    for hb in beats:
        age = now - hb.ts
        if hb.worker == me or age > FORGET_AFTER_S:
            continue
        if age > STALE_AFTER_S:
            at = dt.datetime.fromtimestamp(hb.ts, tz).strftime("%H:%M:%S")
            reasons.append(
                f"gateway worker {hb.worker} stopped reporting at {at} ({age:.0f} s ago)"
            )
        elif not hb.ready:
            reasons.append(f"gateway worker {hb.worker} is not ready ({hb.detail})")
    return reasons


def ledger_down(gw: Gateway) -> str | None:
    sink = gw.ledger
    if isinstance(sink, LedgerService) and sink.writer is not None:
        stats = sink.writer.statistics()
        if not stats.db_up:
            return stats.last_error or "no answer"
    return None


async def banner(gw: Gateway, store: AdminStore, now: float, me: str) -> str | None:
    """The banner's text, or None when the page is fresh."""
    try:
        beats = await store.heartbeats()
    except (trio.TooSlowError, StoreError) as exc:
        log.warning("heartbeats unreadable: %s", exc)
        beats = []
    reasons = stale_reasons(
        now=now, me=me, ready=own_state(gw), ledger_down=ledger_down(gw), beats=beats,
        tz=ZoneInfo(gw.settings.budgets.timezone),
    )  # fmt: skip
    if not reasons:
        return None
    return "Numbers below may be stale: " + "; ".join(reasons) + "."


__all__ = [
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "HeartbeatService",
    "banner",
    "own_state",
    "stale_reasons",
    "worker_id",
]
