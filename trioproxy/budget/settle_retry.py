"""Settles that did not reach the budget store, sent again until they land.

A request's settle that the store did not take (it was marked down: ``NotSent``; no answer
within the call's timeout; the connection lost) would leave the reservation counted at its
reserved amount, and after its lease that amount is final (:mod:`trioproxy.budget.store`):
one dropped Redis connection could hold a team's worst cases as spend for the rest of the
day. Every store's settle is idempotent (a reservation is closed once; a second settle, or
one of a reservation the store does not hold, does nothing), so a settle whose fate is
unknown is simply sent again.

:class:`SettleRetries` is one process's queue of such settles (the gate hands them over
with :meth:`SettleRetries.add`: no wait). Its service (:meth:`SettleRetries.run`, the
``budget-settles`` service, started beside the other budget services) sends them again,
oldest first, each pass after a delay of :data:`SETTLE_RETRY` (doubling while the store
fails, back to its start once a pass lands everything), until each lands or its
reservation's lease has surely ended (``until``: the settle's time plus the lease; the
store then holds the reserved amount, as for any reservation nobody settles). A settle
goes with the time the request ended, so one that lands late still applies. At most
:data:`MAX_PENDING` wait: beyond, the oldest is dropped, logged and counted
(``dropped``, the ``trioproxy_budget_settles_dropped`` metric). At shutdown the gateway
tries the rest once more (:meth:`SettleRetries.flush`, bounded by :data:`FLUSH_S`) before
its services stop.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from trioproxy.budget.store import StoreUnavailable
from trioproxy.core.backoff import Backoff, BackoffPolicy

log = logging.getLogger(__name__)

SETTLE_RETRY = BackoffPolicy(0.25, 5.0)
"""Delay before each pass over the pending settles: from 0.25 s, doubling to 5 s while the
store fails, reset once a pass lands every settle."""
MAX_PENDING = 10_000
"""Settles waiting at most in one process (beyond: the oldest is dropped, counted, logged)."""
FLUSH_S = 5.0
"""At shutdown, the longest the gateway waits for the pending settles to land."""
DROP_LOG_S = 60.0
"""At most one warning per this many seconds about settles dropped at the cap."""


@dataclass(slots=True)
class PendingSettle:
    rid: str
    until: float
    """After this (on ``clock``) the reservation's lease has surely ended: give up."""
    clock: Callable[[], float]
    """The gate's clock (the store's time)."""
    send: Callable[[], Awaitable[None]]
    """One attempt; raises :class:`StoreUnavailable` if the store did not take it."""
    abandon: Callable[[str], None]
    """Given up (why): what the gate does with a settle that never landed."""


@dataclass(frozen=True, slots=True)
class SettleStatistics:
    queued: int
    landed: int
    expired: int
    dropped: int


class SettleRetries:
    def __init__(
        self,
        *,
        max_pending: int = MAX_PENDING,
        retry: BackoffPolicy = SETTLE_RETRY,
    ) -> None:
        self.max_pending = max_pending
        self.retry = retry
        self._pending: OrderedDict[str, PendingSettle] = OrderedDict()
        self._wake = trio.Event()
        self._lock = trio.Lock()
        """One pass at a time (the service's and the shutdown flush)."""
        self.landed = 0
        """Settles that landed on a retry (or met a lost state: the rebuild replays them at
        their actual amounts, journalled when they first failed)."""
        self.expired = 0
        """Given up because the reservation's lease ended first."""
        self.dropped = 0
        """Dropped at :data:`MAX_PENDING` (the oldest first)."""
        self._drops_logged = 0
        self._drop_logged_at = -math.inf
        self.changed = trio.Event()
        """Set (and replaced) whenever a settle leaves the queue (tests wait on it)."""

    @property
    def queued(self) -> int:
        return len(self._pending)

    def statistics(self) -> SettleStatistics:
        return SettleStatistics(len(self._pending), self.landed, self.expired, self.dropped)

    def add(self, pending: PendingSettle) -> None:
        """Queue a settle to send again; returns at once. At the cap the oldest goes."""
        self._pending.pop(pending.rid, None)
        self._pending[pending.rid] = pending
        while len(self._pending) > self.max_pending:
            _, old = self._pending.popitem(last=False)
            self.dropped += 1
            old.abandon("settle retry queue full")
            self._changed()
        now = trio.current_time()
        if self.dropped > self._drops_logged and now >= self._drop_logged_at + DROP_LOG_S:
            log.warning(
                "budget settle retry queue full (%d): dropped %d oldest (%d in all); their "
                "reservations count at the reserved amount", self.max_pending,
                self.dropped - self._drops_logged, self.dropped,
            )  # fmt: skip
            self._drops_logged, self._drop_logged_at = self.dropped, now
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the pending settles again until cancelled (a service of the process)."""
        task_status.started()
        backoff = Backoff(self.retry)
        while True:
            if not self._pending:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await trio.sleep(backoff.next())
            if await self.attempt():
                backoff.reset()

    async def attempt(self) -> bool:
        """One pass, oldest first, until a settle fails; True when nothing is left."""
        async with self._lock:
            while self._pending:
                rid, p = next(iter(self._pending.items()))
                if p.clock() > p.until:
                    self._done(rid, p)
                    self.expired += 1
                    p.abandon("its lease ended first")
                    continue
                try:
                    await p.send()
                except StoreUnavailable as exc:
                    log.info("%d budget settle(s) pending: store not taking them (%s)",
                             len(self._pending), exc)  # fmt: skip
                    return False
                except Exception:  # not the store's outage: trying again would not help
                    log.exception("budget settle of %s failed; given up", rid)
                    if self._done(rid, p):
                        self.dropped += 1
                        p.abandon("an error")
                    continue
                if self._done(rid, p):
                    self.landed += 1
            return True

    async def flush(self, timeout_s: float = FLUSH_S) -> None:
        """At shutdown: keep trying the pending settles for at most ``timeout_s``; what is
        left is given up (logged), counted at its reserved amount in the store."""
        if not self._pending:
            return
        backoff = Backoff(self.retry)
        with trio.move_on_after(timeout_s):
            while True:  # a pass, then a backoff delay, until one lands everything
                if await self.attempt():
                    break
                await trio.sleep(backoff.next())
        if self._pending:
            log.warning("shutdown: %d budget settle(s) never reached the store; their "
                        "reservations count at the reserved amount", len(self._pending))  # fmt: skip
            while self._pending:
                _, p = self._pending.popitem(last=False)
                self.dropped += 1
                p.abandon("shutdown")
            self._changed()

    def _done(self, rid: str, p: PendingSettle) -> bool:
        """Take ``p`` off the queue (False: the cap dropped it meanwhile, or a newer one
        replaced it)."""
        if self._pending.get(rid) is not p:
            return False
        del self._pending[rid]
        self._changed()
        return True

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


__all__ = [
    "FLUSH_S",
    "MAX_PENDING",
    "SETTLE_RETRY",
    "PendingSettle",
    "SettleRetries",
    "SettleStatistics",
]
