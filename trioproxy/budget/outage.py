"""Every budget store call under the outage policy.

Each call runs under ``trio.fail_after(call_timeout_s)``. A timeout (where the store says a
slow answer means an outage) or :class:`StoreUnavailable` marks the store down for
``probe_after_s``: calls skip it meanwhile, so nothing waits on a dead store; the next call
after that tries it again, so recovery needs no operator. While a lost state is being rebuilt
(:mod:`trioproxy.budget.recovery`) calls keep off the store too. What a refused call means
for a request (``fail_closed`` or ``fail_open``) is the gate's decision.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import trio

from trioproxy.budget.periods import retry_after_header
from trioproxy.budget.store import BudgetStore, StateLost, StoreUnavailable
from trioproxy.errors import ErrorKind, PolicyError
from trioproxy.telemetry.log_every import LogEvery

if TYPE_CHECKING:
    from trioproxy.budget.recovery import Recovery

log = logging.getLogger(__name__)
T = TypeVar("T")
SETTLE_PATIENCE = 5
"""A settle may take this many store timeouts before its reservation is left to the lease."""
PATIENT_MAX_S = 15.0
"""And at most this long (the bound on a request's shielded settle)."""


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    mode: Literal["fail_closed", "fail_open"] = "fail_closed"
    call_timeout_s: float = 0.5
    """Longest wait for one store call."""
    probe_after_s: float = 1.0
    """After a failure, skip the store this long (also the 503's Retry-After)."""
    fail_open_share: float = 0.05
    """``fail_open``: share of each limit one process may admit while the store is down."""


class NotSent(StoreUnavailable):
    """The call never went to the store (marked down): nothing of it to undo."""


class StoreCalls:
    """Calls to one budget store, with its down state."""

    def __init__(
        self, store: BudgetStore, outage: OutagePolicy, recovery: Recovery | None = None,
        *, log_clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.store = store
        self.outage = outage
        self.recovery = recovery
        self.failures = 0
        self._down_until = -math.inf
        self._down = False
        # a store that answers some calls and fails others (a state disk gone read-only:
        # reads pass, writes fail) went down and back every probe: ~2 lines a second
        self._down_lines = LogEvery(clock=log_clock)
        self._back_lines = LogEvery(clock=log_clock)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        patient: bool = False,
        shield: bool = False,
        despite_down: bool = False,
        probe: bool = False,
    ) -> T:
        """One store call under the outage policy.

        A timeout marks the store down only when the store says a slow answer means
        an outage (Redis: a dead connection); a busy embedded SQLite store is
        overloaded, not down, so only the call at hand fails. ``patient`` calls
        (settles: their reservation would otherwise stand until its lease ends)
        wait ``SETTLE_PATIENCE`` times longer, up to ``PATIENT_MAX_S``. ``shield``: the call (with its down and
        rebuilding checks) runs to its end or its timeout in a cancelled task too (a settle):
        the timeout's scope is the shield, no second scope. ``probe`` (with ``despite_down``:
        a retried settle): its success ends the down mark; a release sent despite the mark
        right after the failure does not (the store may answer that and hang the next
        reservation). ``despite_down``: the call goes to
        a store marked down too (undoing what a call that just marked it down may have done).
        """
        now = trio.current_time()
        timeout = self.outage.call_timeout_s
        if patient:
            timeout = min(timeout * SETTLE_PATIENCE, PATIENT_MAX_S)
        # a plain scope on the time read above (``fail_after``: a generator, two reads)
        with trio.CancelScope(deadline=now + timeout, shield=shield) as scope:
            if now < self._down_until and not despite_down:
                await trio.lowlevel.checkpoint()
                raise NotSent("budget store marked down")
            if self.recovery is not None and self.recovery.rebuilding:
                await trio.lowlevel.checkpoint()
                raise StateLost("budget state being rebuilt from the ledger")
            try:
                result = await fn()
            except StateLost:
                self.failures += 1
                if self.recovery is not None:
                    self.recovery.lost()
                raise
            except StoreUnavailable as exc:
                self.failures += 1
                self._mark_down(repr(exc))
                raise StoreUnavailable(f"budget store: {exc!r}") from exc
        if scope.cancelled_caught:
            self.failures += 1
            if self.store.timeouts_are_outages:
                self._mark_down(f"no answer within {timeout:g} s")
            raise StoreUnavailable(f"budget store: no answer within {timeout:g} s")
        if self._down and (probe or not despite_down):  # it answered: back now
            self._down, self._down_until = False, -math.inf
            if (skipped := self._back_lines.due()) is not None:
                log.warning("budget store is back" + _since(skipped, "went down and back"),
                            extra={"fields": {"store": "budget"}})  # fmt: skip
        return result

    def refusing(self, now: float) -> bool:
        """Marked down and not yet due for a probe, under ``fail_closed``: every budgeted
        request is refused now (``/readyz`` says so; once a probe is due it is ready again,
        so traffic can carry the probe)."""
        return self._down and now < self._down_until and self.outage.mode == "fail_closed"

    def _mark_down(self, why: str) -> None:
        self._down_until = trio.current_time() + self.outage.probe_after_s
        if not self._down:
            self._down = True
            if (skipped := self._down_lines.due()) is not None:
                log.warning(
                    "budget store down (%s); outage policy %r until it answers%s", why,
                    self.outage.mode, _since(skipped, "went down"),
                    extra={"fields": {"store": "budget"}},
                )  # fmt: skip

    def unavailable(self) -> PolicyError:
        """What a refused request gets under ``fail_closed``: 503 with Retry-After."""
        return PolicyError(
            ErrorKind.OVERLOADED,
            "budget store unavailable; try again shortly",
            retry_after=retry_after_header(self.outage.probe_after_s),
        )


def _since(skipped: int, what: str) -> str:
    return f" ({what} {skipped} more times since the last such line)" if skipped else ""


__all__ = ["PATIENT_MAX_S", "SETTLE_PATIENCE", "OutagePolicy", "StoreCalls"]
