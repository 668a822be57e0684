"""The open budget reservations of dead processes, settled at their journals' records.

A process killed mid-request (SIGKILL, OOM) leaves its reservations open in the budget store;
its journal (``ledger/journal.py``) says what each request consumed. The ledger writer of a
live process recovers that journal and hands the records here (:meth:`DeadReservations.hand`:
no wait, bounded); this service settles each reservation at its record
(:func:`~trioproxy.budget.orphans.settle_orphan`), off the ledger writer's path; a request
whose reservation a shared store lost (its state rebuilt after the process died, from a
ledger without these records) is charged there at its record instead, once. A
store that does not answer (at start-up the Redis connection may not be made yet) is tried
again with a backoff; a reservation whose lease has ended is left to the store, which counts
it at its reserved amount, as it does any reservation nobody settles.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from trioproxy.budget.orphans import settle_orphan
from trioproxy.budget.store import StoreUnavailable
from trioproxy.core.backoff import Backoff, BackoffPolicy
from trioproxy.core.types import total_tokens
from trioproxy.ledger.record import UsageRecord

if TYPE_CHECKING:
    from trioproxy.pipeline.admission import Admission

log = logging.getLogger("trioproxy.budget")

MAX_PENDING = 100_000
"""Reservations waiting at most (beyond: the oldest is dropped, counted, left to its lease)."""
RETRY = BackoffPolicy(1.0, 30.0)


class DeadReservations:
    def __init__(self, admission: Callable[[], Admission | None]) -> None:
        """``admission``: the admission in force (a reload replaces it)."""
        self._admission = admission
        self._pending: deque[tuple[UsageRecord, int, float]] = deque()
        """(request record, tokens, when handed over: ``trio.current_time()``)."""
        self._wake = trio.Event()
        self.settled = 0
        """Reservations the store held open and this settled, or requests it charged: their
        reservations were in a state lost and rebuilt before their records reached the
        ledger (:func:`~trioproxy.budget.orphans.settle_orphan`)."""
        self.dropped = 0
        """Handed over but never settled: over :data:`MAX_PENDING`, or the lease ran out
        while the store did not answer."""

    def hand(self, records: Sequence[UsageRecord]) -> None:
        """Take a dead process's records (its attempts and request records); returns at once.
        A request's cost is its request record's, its tokens its attempts' (all of them)."""
        tokens: dict[str, int] = {}
        for r in records:
            if r.kind == "attempt":
                tokens[r.request_id] = tokens.get(r.request_id, 0) + total_tokens(r)
        now = trio.current_time()
        for r in records:
            if r.kind == "request":
                spent = tokens.get(r.request_id, total_tokens(r))
                self._pending.append((r, spent, now))
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        if self._pending:
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Settle what is handed over, until cancelled (a service of the process)."""
        task_status.started()
        backoff = Backoff(RETRY)
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            settled = 0
            while self._pending:
                admission = self._admission()
                if admission is None:  # no budgets in this process
                    self._pending.clear()
                    break
                gate = admission.gate
                r, tokens, since = self._pending[0]
                if trio.current_time() - since > gate.lease_s:  # ended: the store's now
                    self._pending.popleft()
                    self.dropped += 1
                    continue
                try:
                    charge = (
                        gate.spent_claims(r.team, r.user, r.cost_micros, tokens, at=r.ts)
                        if r.cost_micros or tokens
                        else []
                    )
                    settled += await settle_orphan(
                        gate.store, r.request_id, r.cost_micros, tokens, now=gate.clock(),
                        timeout_s=gate.outage.call_timeout_s, charge=charge, started=r.ts,
                    )  # fmt: skip
                except StoreUnavailable as exc:
                    delay = backoff.next()
                    log.info("dead process's reservations: store not answering (%s); "
                             "again in %.0f s", exc, delay)  # fmt: skip
                    await trio.sleep(delay)
                    continue
                backoff.reset()
                self._pending.popleft()
            if settled:
                self.settled += settled
                log.info("settled %d reservations left open by a dead process", settled)


__all__ = ["MAX_PENDING", "DeadReservations"]
