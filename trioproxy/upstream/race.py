"""Fallback and hedging as one mechanism: staggered attempts in one nursery (a chain
without hedging needs no nursery: its attempts run one after the other in the caller's task).

Modelled on trio's ``open_tcp_stream`` (Happy Eyeballs). Targets are tried in
chain order. The next target starts when the running one *fails*, or, when
the running target has ``hedge_after_ms``, when that much time passes without
a first byte. The first attempt to produce a first byte *claims* the race:
every other attempt is cancelled, and no new one starts. A plain fallback
chain is the case ``hedge_after_ms = None`` (stagger = infinity).

An attempt is any async function ``run(attempt, claim)`` that raises
:class:`AttemptFailed` to fall through, raises a caller-fault
:class:`~trioproxy.errors.GatewayError` to stop the race, and calls
``claim(attempt)`` at its first byte; the winner keeps running (relaying its
stream) inside the race's nursery until it is done.

Targets whose breaker is open are skipped, unless every remaining target is
open too (the last hope is tried anyway). Every attempt, losers included, is
kept in :attr:`Race.attempts` with its timing and outcome.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import trio

from trioproxy.breakers.transitions import Verdict
from trioproxy.config.model import Target
from trioproxy.errors import ErrorKind, GatewayError, ProviderError

REPORT_TIMEOUT_S = 1.0
"""Bound on an attempt's breaker report (shielded: it runs after a cancellation too)."""

AttemptOutcome = Literal["running", "won", "lost", "failed", "cancelled", "rejected"]


class AttemptFailed(Exception):
    """This target failed in a way that lets the next one try."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after


@dataclass(slots=True)
class Attempt:
    index: int
    """Order of launch within this request (0 = first)."""
    depth: int
    """Position of the target in the chain."""
    target: Target
    role: Literal["primary", "fallback", "hedge"]
    started_at: float
    wall_started_at: float
    first_byte_at: float | None = None
    ended_at: float | None = None
    outcome: AttemptOutcome = "running"
    error: AttemptFailed | GatewayError | None = None
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Breakers(Protocol):
    """What the race needs from breaker storage (see :mod:`.breakers`)."""

    async def check(self, target: str, now: float) -> Verdict:
        """May take the half-open probe slot: call only when about to launch."""
        ...

    async def report(
        self, target: str, now: float, *, ok: bool | None, retry_after: float | None = None
    ) -> None:
        """``ok=None``: abandoned (cancelled), no evidence either way."""
        ...

    def report_success_nowait(self, target: str) -> bool:
        """Record a success without waiting when that needs no I/O (True); False when
        :meth:`report` must be awaited."""
        ...

    async def reset(self, target: str) -> None:
        """Close the breaker now (the dashboard's manual reset)."""
        ...

    def snapshot(self, now: float) -> dict[str, dict[str, object]]: ...


RunAttempt = Callable[[Attempt, Callable[[Attempt], bool]], Awaitable[None]]


class Race:
    def __init__(self, targets: Sequence[Target], run: RunAttempt, breakers: Breakers) -> None:
        self.targets = tuple(targets)
        self.attempts: list[Attempt] = []
        self.winner: Attempt | None = None
        self.fatal: GatewayError | None = None
        self._run = run
        self._breakers = breakers
        self._hedged = any(t.hedge_after_ms is not None for t in self.targets)
        """Attempts may overlap: they run as tasks of one nursery. Otherwise one runs at a
        time, in the caller's task (no nursery, task or wake channel per request)."""
        self._wake_send: trio.MemorySendChannel[None] | None = None
        self._wake_recv: trio.MemoryReceiveChannel[None] | None = None
        if self._hedged:
            self._wake_send, self._wake_recv = trio.open_memory_channel[None](len(self.targets) + 1)

    def _wake(self) -> None:
        if self._wake_send is not None:
            self._wake_send.send_nowait(None)

    def _claim(self, attempt: Attempt) -> bool:
        if self.winner is not None or self.fatal is not None:
            return False
        attempt.first_byte_at = trio.current_time()
        attempt.outcome = "won"
        self.winner = attempt
        for other in self.attempts:
            if other is not attempt and other.outcome == "running":
                other.outcome = "lost"
                other.cancel_scope.cancel()
        self._wake()
        return True

    async def _attempt(self, attempt: Attempt) -> None:
        name = attempt.target.model
        try:
            if self._hedged:
                with attempt.cancel_scope:  # a winner or a fatal error cancels the others
                    await self._run(attempt, self._claim)
            else:  # one at a time: no other attempt runs beside it to cancel it
                await self._run(attempt, self._claim)
        except AttemptFailed as exc:
            attempt.outcome, attempt.error = "failed", exc
            await self._report(name, ok=False, retry_after=exc.retry_after)
            self._wake()
            return
        except GatewayError as exc:
            attempt.outcome, attempt.error = "rejected", exc
            if self.winner is None and self.fatal is None:
                self.fatal = exc
                for other in self.attempts:
                    other.cancel_scope.cancel()
            self._wake()
            return
        finally:
            attempt.ended_at = trio.current_time()
        if attempt.outcome == "won":
            if not self._breakers.report_success_nowait(name):  # closed and known: no I/O
                await self._report(name, ok=True)
        elif attempt.outcome in ("running", "lost"):
            attempt.outcome = "lost" if self.winner is not None else "cancelled"
            await self._report(name, ok=None)

    async def _report(
        self, name: str, *, ok: bool | None, retry_after: float | None = None
    ) -> None:
        # shielded and bounded in one scope (its own deadline still applies under the shield)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + REPORT_TIMEOUT_S):
            await self._breakers.report(name, trio.current_time(), ok=ok, retry_after=retry_after)

    async def _eligible(self, depth: int) -> tuple[int, Verdict] | None:
        """Next target at or after ``depth`` that its breaker lets through."""
        now = trio.current_time()
        for d in range(depth, len(self.targets)):
            verdict = await self._breakers.check(self.targets[d].model, now)
            if verdict is not Verdict.DENY:
                return d, verdict
            if d == len(self.targets) - 1 and not self.attempts:
                return d, Verdict.PROBE  # every target is open: try the last hope
        return None

    async def run(self) -> None:
        """Run to completion; afterwards ``winner`` or ``error()`` says how it went."""
        if not self._hedged:
            await self._one_at_a_time()
            return
        assert self._wake_recv is not None
        async with trio.open_nursery() as nursery:
            depth = 0
            while self.winner is None and self.fatal is None:
                if depth < len(self.targets) and (self._running() == 0 or self._hedge_due()):
                    nxt = await self._eligible(depth)
                    if self.winner is not None or self.fatal is not None:
                        # decided while a shared breaker was read: no hedge to send (it would be
                        # billed for nothing and the race would wait for its whole answer)
                        if nxt is not None and nxt[1] is Verdict.PROBE:  # a half-open slot
                            await self._report(self.targets[nxt[0]].model, ok=None)
                        break
                    if nxt is None:
                        depth = len(self.targets)
                    else:
                        self._launch(nursery, nxt[0])
                        depth = nxt[0] + 1
                if depth >= len(self.targets) and self._running() == 0:
                    break
                stagger = self._hedge_wait() if depth < len(self.targets) else math.inf
                if stagger == math.inf:  # nothing to hedge: no timer to arm
                    await self._wake_recv.receive()
                    continue
                with trio.move_on_after(stagger):
                    await self._wake_recv.receive()

    async def _one_at_a_time(self) -> None:
        """A chain without hedging: the next target starts only when the one before failed,
        so the attempts run in this task, one after the other, as the nursery would run them
        (the same breaker checks, claims, reports and records). Nothing cancels one attempt
        alone here (a claim or a fatal error only cancels attempts running beside it, and
        there are none), so none enters its ``cancel_scope``: the caller's scopes (the
        request, the drain deadline) still cancel it."""
        depth = 0
        while self.winner is None and self.fatal is None and depth < len(self.targets):
            nxt = await self._eligible(depth)
            if nxt is None:
                return
            depth = nxt[0] + 1
            await self._attempt(self._new_attempt(nxt[0]))

    def _launch(self, nursery: trio.Nursery, depth: int) -> None:
        nursery.start_soon(self._attempt, self._new_attempt(depth))

    def _new_attempt(self, depth: int) -> Attempt:
        running = self._running()
        role: Literal["primary", "fallback", "hedge"] = (
            "primary" if not self.attempts else "hedge" if running else "fallback"
        )
        attempt = Attempt(
            index=len(self.attempts),
            depth=depth,
            target=self.targets[depth],
            role=role,
            started_at=trio.current_time(),
            wall_started_at=time.time(),
        )
        self.attempts.append(attempt)
        return attempt

    def _running(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == "running")

    def _latest_running(self) -> Attempt | None:
        running = [a for a in self.attempts if a.outcome == "running"]
        return running[-1] if running else None

    def _hedge_wait(self) -> float:
        latest = self._latest_running()
        if latest is None or latest.target.hedge_after_ms is None:
            return math.inf
        due = latest.started_at + latest.target.hedge_after_ms / 1000
        return max(0.0, due - trio.current_time())

    def _hedge_due(self) -> bool:
        return self._hedge_wait() == 0.0

    def error(self) -> GatewayError:
        """The error for the caller when no attempt won."""
        if self.fatal is not None:
            return self.fatal
        failures = [a.error for a in self.attempts if isinstance(a.error, AttemptFailed)]
        if not failures:
            return ProviderError(ErrorKind.UPSTREAM_UNAVAILABLE, "No upstream target is available.")
        detail = "; ".join(
            f"{a.target.model}: {a.error.message}"
            for a in self.attempts
            if isinstance(a.error, AttemptFailed)
        )
        retry_after = min((f.retry_after for f in failures if f.retry_after), default=None)
        kind = (
            ErrorKind.UPSTREAM_TIMEOUT
            if all(f.kind is ErrorKind.UPSTREAM_TIMEOUT for f in failures)
            else ErrorKind.UPSTREAM_RATE_LIMITED
            if all(f.status == 429 for f in failures)
            else ErrorKind.UPSTREAM_UNAVAILABLE
        )
        return ProviderError(
            kind, f"All upstream targets failed ({detail}).", retry_after=retry_after
        )


__all__ = ["REPORT_TIMEOUT_S", "Attempt", "AttemptFailed", "Breakers", "Race", "RunAttempt"]
