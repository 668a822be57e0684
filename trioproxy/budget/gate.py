"""Admission: reserve a request's worst case against every budget that applies.

**Guarantee.** Every budget is a bucket in the store; a request is admitted
only if one atomic reservation fits in *all* its buckets (team daily µUSD,
team monthly µUSD, the key user's token window, the end user's token window),
and reserved amounts count as spent until settled down to the actual cost.
Hence, for every team period and every window, recorded spend ≤ limit, across
processes and instances sharing the store. The exceptions, and their bounds:

* **Streamed responses under a reservation cap** (``reserve_cap_micros``):
  the stream is metered and :meth:`Ticket.extend` grows the reservation before
  the running cost passes it. When the budget has no room the response ends
  with a budget error; the chunk already received from upstream is billed, so
  the overshoot is at most that one chunk. Without a cap it is zero. A whole
  (non-streamed) answer is never capped (:mod:`trioproxy.pipeline.admission`): it reserves its
  worst case.
* **Actual > worst case**: cannot happen when prompt tokens are bounded with
  ``core.input_bound.input_bound`` and the provider honours ``max_tokens``; if a
  provider bills more anyway, settle records the real amount.
* **Store outage** under ``fail_open``: each process admits against a local,
  in-memory budget of ``fail_open_share`` * each limit per period, on top of
  whatever the store held: overspend ≤ processes * share * limit per outage
  period. ``fail_closed`` (the default) refuses with 503 instead.
* Alert thresholds, user token windows and per-key RPM / TPM changed at run time
  (``swap_policy``: :mod:`trioproxy.budget.policy`, kept in the store) apply on this
  process from its next admission, and on every other process within ``limits_ttl_s``
  (each caches the store's policy that long).
* Limits changed at run time (``update_team_limits``, from any process) apply from the
  next admission on: the team's day and month claims name the team (``limit_ref``) and
  the store checks them against the limit it holds at that moment, in the same atomic
  operation. Every admission therefore goes to the store, also for teams without limits
  (``loadtest/budget_rebuild_bench.py``: admission + settle on Redis costs 0.12-0.26 ms of
  gateway CPU, 0.05 ms of it the gate's own work, and 0.05 ms of Redis CPU); kept: a
  team's counters then always hold its spend, so a limit set mid-period counts what was
  spent before it.
* **Redis state lost** (restart without persistence): nothing is admitted from empty
  state; :mod:`trioproxy.budget.recovery` rebuilds it from the ledger first (a process that
  died before the loss: its requests are charged when its ledger journal is recovered,
  :mod:`trioproxy.budget.orphans`).

**Outage policy** (:mod:`trioproxy.budget.outage`): a store that does not answer is
skipped for ``probe_after_s``; ``fail_closed`` then raises ``PolicyError(OVERLOADED)`` with
``Retry-After``, ``fail_open`` admits against the local limits. A settle the store did not
take (marked down, no answer in time, the connection lost) is not dropped: it goes to the
process's :class:`~trioproxy.budget.settle_retry.SettleRetries`, which sends it again
(idempotent) with a backoff until it lands; meanwhile the reservation counts at its reserved
amount, which errs towards refusing. Only one that cannot land before its lease ends (or is
dropped from that bounded queue, or pending at shutdown past ``FLUSH_S``) stays counted at its
reserved amount for good, as any reservation nobody settles (:mod:`trioproxy.budget.store`:
final at the reserved amount when its lease expires). A reservation whose answer never came
back (the call cancelled or timed out after the store took it) is released at once by the
gate, shielded and bounded (``RELEASE_TIMEOUT_S``). Which limits apply:
:mod:`trioproxy.budget.limits`; which buckets a request claims: :mod:`trioproxy.budget.holds`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import trio

from trioproxy.budget.alerts import AlertSink, alert_refusal, check_alerts
from trioproxy.budget.claims import Claim, initial_reservation, scaled
from trioproxy.budget.denials import denied
from trioproxy.budget.holds import Holds, local_hold
from trioproxy.budget.limits import DEFAULT_ALERT_THRESHOLD, Limits
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.outage import NotSent, OutagePolicy, StoreCalls
from trioproxy.budget.policy import Policy
from trioproxy.budget.settle_retry import PendingSettle, SettleRetries
from trioproxy.budget.store import (
    BudgetStore,
    ReservationClosed,
    StateLost,
    StoreUnavailable,
    TeamLimits,
)
from trioproxy.budget.ticket import Hold, KeyRate, Ticket, Who
from trioproxy.config.model import BudgetsConfig, UserWindow
from trioproxy.errors import ErrorKind, PolicyError

if TYPE_CHECKING:
    from trioproxy.budget.recovery import Recovery

log = logging.getLogger(__name__)
LOCAL_PRUNE_EVERY_S = 1.0
"""How often (at most) a fail-open admission drops what the local store no longer needs:
settled reservations, slid-out window entries, end users' empty windows."""
RELEASE_TIMEOUT_S = 15.0
"""Bound on releasing (shielded) a reservation whose store answer never came back."""


class BudgetGate:
    def __init__(
        self,
        budgets: BudgetsConfig,
        store: BudgetStore,
        *,
        clock: Callable[[], float] = time.time,
        outage: OutagePolicy = OutagePolicy(),
        lease_s: float = 900.0,
        limits_ttl_s: float = 2.0,
        alerts: AlertSink | None = None,
        end_user_window: UserWindow | None = None,
        recovery: Recovery | None = None,
        settles: SettleRetries | None = None,
    ) -> None:
        self._tz = ZoneInfo(budgets.timezone)
        self.store = store
        self.clock = clock
        self.lease_s = lease_s
        self._alerts = alerts
        self._calls = StoreCalls(store, outage, recovery)
        self._call = self._calls.call
        self.limits = Limits(budgets, self._calls, limits_ttl_s)
        self._holds = Holds(self.limits, self._tz, end_user_window or budgets.users.get("*"))
        self._local = MemoryStore()
        self._local_pruned = -math.inf
        self.settles = settles
        """Where a settle the store did not take waits to be sent again (the process's,
        shared by the gates of its reloads; None: such a settle is left to the lease)."""

    @property
    def outage(self) -> OutagePolicy:
        return self._calls.outage

    @property
    def recovery(self) -> Recovery | None:
        """A shared store's state-loss recovery (Redis): it journals this gate's
        reservations, and while it restores a lost state the gate keeps off the store."""
        return self._calls.recovery

    @property
    def store_failures(self) -> int:
        return self._calls.failures

    @property
    def limits_ttl_s(self) -> float:
        return self.limits.ttl_s

    @limits_ttl_s.setter
    def limits_ttl_s(self, ttl_s: float) -> None:
        self.limits.ttl_s = ttl_s

    @property
    def alerts(self) -> AlertSink | None:
        return self._alerts

    # --- limits and policy overrides (:mod:`trioproxy.budget.limits`) --------------

    async def team_limits(self, team: str) -> TeamLimits:
        """Run-time limits from the store (cached ``limits_ttl_s``), else config."""
        return await self.limits.team(team)

    async def set_team_limits(self, team: str, daily: int | None, monthly: int | None) -> None:
        """Set a team's limits in µUSD (None: no limit) for every process sharing the store."""
        await self.limits.set_team(team, daily, monthly)

    async def update_team_limits(
        self, team: str, changes: Mapping[str, int | None]
    ) -> tuple[TeamLimits, TeamLimits]:
        """Set only the limits ``changes`` names (``daily`` / ``monthly``, µUSD or None),
        atomically; the limits before and after (``Limits.update_team``)."""
        return await self.limits.update_team(team, changes)

    def configured_threshold(self, team: str) -> float:
        return self.limits.configured_threshold(team)

    def configured_window(self, user: str) -> UserWindow | None:
        return self.limits.configured_window(user)

    async def policy(self) -> Policy:
        return await self.limits.policy()

    async def set_policy(self, name: str, value: str) -> None:
        """Store one override (:mod:`trioproxy.budget.policy`); this process reads it back
        at once, the others within ``limits_ttl_s``."""
        await self.limits.set_policy(name, value)

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        """Compare-and-set of one override: what it held, ``value`` written if that is
        ``expected`` (``Limits.swap_policy``)."""
        return await self.limits.swap_policy(name, expected, value)

    async def save_override(
        self, name: str, value: str, *, fields: Collection[str] | None = None
    ) -> None:
        """The durable copy of an override the store took (team limits: their
        :func:`~trioproxy.budget.overrides.limits_entry`), ``fields`` of it or all; see
        ``Limits.save_override``."""
        await self.limits.save_override(name, value, fields=fields)

    def spent_claims(
        self, team: str, user: str, cost_micros: int, tokens: int, *, at: float
    ) -> list[Claim]:
        """What a rebuild from the ledger counts for a request record of ``team`` / ``user``
        dated ``at`` that consumed ``cost_micros`` / ``tokens`` (:mod:`.rebuild`): the team's
        day and month at ``at`` and the user's token window in force (the policy as this
        process last read it). A dead process's request charged to a rebuilt state that did
        not count it (:mod:`trioproxy.budget.orphans`)."""
        who, policy = Who(team, user), self.limits.cached_policy
        return [h.claim for h in self._holds.of(who, None, cost_micros, tokens, at, policy=policy)]

    # --- admission ----------------------------------------------------------------

    async def admit(
        self,
        *,
        request_id: str,
        team: str,
        user: str,
        end_user: str | None,
        worst_case_usd_micros: int,
        worst_case_tokens: int,
        reserve_cap_micros: int | None = None,
        floor_micros: int = 0,
        rate: KeyRate | None = None,
    ) -> Ticket:
        """Reserve, or raise :class:`PolicyError` (BUDGET_EXCEEDED, RATE_LIMITED, OVERLOADED).

        ``floor_micros`` (the prompt's worst cost) keeps a capped reservation
        from being smaller than what the request surely costs.
        """
        usd = initial_reservation(worst_case_usd_micros, reserve_cap_micros, floor_micros)
        tokens = worst_case_tokens
        if usd < worst_case_usd_micros:
            tokens = scaled(worst_case_tokens, usd, worst_case_usd_micros)
        who = Who(team, user, end_user, rate)
        ticket = Ticket(request_id, who, worst_case_usd_micros, worst_case_tokens,
                        reserve_cap_micros)  # fmt: skip
        now = self.clock()
        policy = await self.policy()
        try:
            holds = self._holds.of(who, None, usd, tokens, now, count_request=True, policy=policy)
            try:
                denial = await self._call(
                    lambda: self.store.reserve(
                        request_id, [h.claim for h in holds], now=now, lease_s=self.lease_s,
                        usage=ticket.window_usage,
                    )
                )  # fmt: skip
            except NotSent:
                raise
            except BaseException as exc:  # no answer (cancelled, timed out): it may be taken
                await self._release(ticket, holds, now, gone=isinstance(exc, StoreUnavailable))
                raise
        except StoreUnavailable:
            known = self.limits.last(team)
            holds = self._holds.of(who, known, usd, tokens, now, count_request=True, policy=policy)
            if not holds:  # no budget applies to this request: serve it unreserved
                return ticket
            if self.outage.mode == "fail_closed":
                raise self._calls.unavailable() from None
            holds = [local_hold(h, self.outage.fail_open_share) for h in holds]
            ticket.local = True
            if now >= self._local_pruned + LOCAL_PRUNE_EVERY_S:
                self._local_pruned = now
                self._local.prune(now)
            denial = await self._local.reserve(
                request_id, [h.claim for h in holds], now=now, lease_s=self.lease_s
            )
        if denial is not None:
            await alert_refusal(self._alerts, self.limits, ticket, holds, denial, now)
            raise denied(team, holds, denial)
        if self.recovery is not None and not ticket.local:
            claims = [h.claim for h in holds]
            self.recovery.admitted(request_id, claims, now=now, lease_s=self.lease_s)
        ticket.holds.extend(holds)
        ticket.reserved_micros, ticket.reserved_tokens = usd, tokens
        return ticket

    async def extend(self, ticket: Ticket, *, cost_micros: int, tokens: int) -> None:
        """Make ``ticket``'s reservation cover ``cost_micros`` / ``tokens`` consumed so far.

        Grows it by at least one cap step (not past the worst case unless
        needed). Raises ``PolicyError`` if a budget has no room: end the stream.
        """
        grow = ticket.growth(cost_micros, tokens)
        if grow is None:
            return
        add_usd, add_tok = grow
        now = self.clock()
        team = ticket.who.team
        known = self.limits.last(team) if ticket.local else None
        holds = self._holds.of(ticket.who, known, add_usd, add_tok, now)
        if ticket.local:
            holds = [local_hold(h, self.outage.fail_open_share) for h in holds]
        claims = [h.claim for h in holds]
        try:
            if ticket.local:  # in this process's memory: no outage to wait out
                denial = await self._local.extend(ticket.request_id, claims, now=now)
            else:
                denial = await self._call(
                    lambda: self.store.extend(ticket.request_id, claims, now=now)
                )
        except ReservationClosed:
            raise PolicyError(ErrorKind.BUDGET_EXCEEDED, "budget reservation expired") from None
        except StoreUnavailable:
            raise self._calls.unavailable() from None
        if denial is not None:
            await alert_refusal(self._alerts, self.limits, ticket, holds, denial, now)
            raise denied(team, holds, denial, growing=True)
        if self.recovery is not None and not ticket.local:
            self.recovery.extended(ticket.request_id, [h.claim for h in holds], now=now)
        ticket.holds.extend(holds)
        ticket.reserved_micros += add_usd
        ticket.reserved_tokens += add_tok

    async def settle(self, ticket: Ticket, cost_micros: int, tokens: int) -> None:
        """Record what the request actually consumed; idempotent. Never raises for
        a store outage: a settle the store did not take is sent again later
        (:attr:`settles`). Cancellation-proof: the store call is shielded
        (bounded by its patient timeout), and so is the alert check's read of the store when
        its cached limits are stale; nothing else here waits."""
        if ticket.settled:
            return
        ticket.settled = True
        if not ticket.holds:
            return
        now = self.clock()
        actual = ticket.actual_by_bucket(cost_micros, tokens)
        rid, rec = ticket.request_id, self.recovery
        if ticket.local:  # in this process's memory: no outage to wait out (the store's down
            await self._local.settle(rid, actual, now=now)  # mark refused it: held 900 s)
            return
        try:
            totals = await self._send_settle(rid, actual, now, patient=True)
        except StateLost:  # settled once the state is restored (``Recovery``)
            if rec is not None:
                rec.defer(rid, actual)
            return
        except StoreUnavailable as exc:
            self._settle_later(ticket, actual, now, exc)
            return
        await check_alerts(self._alerts, self.limits, ticket, now, totals)

    async def _send_settle(
        self, rid: str, actual: Mapping[str, int], now: float, *, patient: bool
    ) -> Mapping[str, int] | None:
        """One settle call under the outage policy, shielded: the request's own (``patient``,
        skipped while the store is marked down) or a retry's (one call timeout, sent to a
        store marked down too: the retry service paces it). The store's totals, if any."""
        store, rec = self.store, self.recovery
        if rec is None:
            return await self._call(lambda: store.settle(rid, actual, now=now),
                                    patient=patient, shield=True, despite_down=not patient,
                                    probe=not patient)  # fmt: skip
        await self._call(lambda: rec.settle(rid, actual, now=now),
                         patient=patient, shield=True, despite_down=not patient,
                         probe=not patient)  # fmt: skip
        return None

    def _settle_later(
        self, ticket: Ticket, actual: Mapping[str, int], now: float, exc: StoreUnavailable
    ) -> None:
        """A settle the store did not take: journalled at ``actual`` (a rebuild of a lost
        state writes that), then queued to be sent again until it lands or its lease ends."""
        rid, rec = ticket.request_id, self.recovery
        if rec is not None:
            rec.failed(rid, actual, now=now)
        settles = self.settles
        if settles is None:
            log.warning("settle of %s failed (%s); its reservation counts at the reserved "
                        "amount (final when its lease ends)", rid, exc)  # fmt: skip
            return

        async def send() -> None:
            try:
                totals = await self._send_settle(rid, actual, now, patient=False)
            except StateLost:  # the rebuild replays it at ``actual`` (journalled above)
                return
            await check_alerts(self._alerts, self.limits, ticket, now, totals)

        def abandon(why: str) -> None:
            log.warning("settle of %s given up (%s); its reservation counts at the reserved "
                        "amount", rid, why)  # fmt: skip

        log.info("settle of %s failed (%s); sending it again", rid, exc)
        settles.add(PendingSettle(rid, now + self.lease_s, self.clock, send, abandon))

    def refusing_all(self) -> bool:
        """The store is down under ``fail_closed``: every admission is refused now."""
        return self._calls.refusing(trio.current_time())

    async def _release(
        self, ticket: Ticket, holds: list[Hold], now: float, *, gone: bool = False
    ) -> None:
        """Settle at nothing (the request still counted against its RPM) a reservation whose
        answer never came back: the store may hold it, and the request that asked for it
        will not settle it. Shielded, bounded by :data:`RELEASE_TIMEOUT_S`; a store that
        does not hold it does nothing; a store being rebuilt leaves it to the rebuild. After a
        reserve that failed (``gone``: no answer in time, connection lost) the release goes to
        the store that failure just marked down, within one call timeout (the caller waits
        for its 503 or fail-open admission); if that fails too, the lease ends it. ``ticket``
        itself is left as it was: a fail-open admission goes on to hold against the local
        limits."""
        actual = dataclasses.replace(ticket, holds=list(holds)).actual_by_bucket(0, 0)
        rid = ticket.request_id
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
            try:
                await self._call(
                    lambda: self.store.settle(rid, actual, now=now),
                    patient=not gone,
                    despite_down=gone,
                )
            except (StoreUnavailable, StateLost) as exc:
                log.debug("release of %s failed (%s); left to its lease", rid, exc)


__all__ = ["DEFAULT_ALERT_THRESHOLD", "BudgetGate", "KeyRate", "OutagePolicy", "Ticket", "Who"]
