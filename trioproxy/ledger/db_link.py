"""The ledger writer's side of its database: batch writes within a bound, and whether the
database is up.

A failed or timed-out write marks the database down; the next attempt waits out an
exponential backoff (``retry_min`` doubling to ``retry_max``); a write that succeeds marks
it up again. The writer spools while it is down (:mod:`trioproxy.ledger.spooler`).
"""

from __future__ import annotations

import logging

import trio

from trioproxy.core.backoff import Backoff, BackoffPolicy
from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.record import UsageRecord

log = logging.getLogger("trioproxy.ledger")


class DatabaseLink:
    def __init__(self, backend: LedgerBackend, retry_min: float, retry_max: float) -> None:
        self.backend = backend
        self.up = True
        self.retry_at = 0.0
        """While down: ``trio.current_time()`` of the next attempt."""
        self.last_error: str | None = None
        self.written = 0
        """New records stored (replays included)."""
        self.duplicates = 0
        """Records the database already had (replays after partial writes)."""
        self._backoff = Backoff(BackoffPolicy(retry_min, retry_max, jitter=False))

    def may_write(self, now: float) -> bool:
        """Up, or down with its backoff over."""
        return self.up or now >= self.retry_at

    async def write(self, batch: list[UsageRecord], bound: float) -> bool:
        """Write ``batch`` within ``bound`` seconds; False (and marked down) when it fails."""
        try:
            with trio.fail_after(bound):
                new = await self.backend.write_batch(batch)
        except Exception as exc:  # trio.Cancelled is a BaseException and propagates
            self._mark_down(exc)
            return False
        self.written += new
        self.duplicates += len(batch) - new
        if not self.up:
            log.info("ledger database is back")
        self.up = True
        self._backoff.reset()
        return True

    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.up:
            log.warning("ledger database write failed, spooling: %s", self.last_error)
        self.up = False
        self.retry_at = trio.current_time() + self._backoff.next()


__all__ = ["DatabaseLink"]
