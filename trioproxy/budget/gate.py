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
  the overshoot is at most that one chunk. Without a cap it is zero.
* **Actual > worst case**: cannot happen when prompt tokens are bounded with
  ``core.input_bound.input_bound`` and the provider honours ``max_tokens``; if a
  provider bills more anyway, settle records the real amount.
* **Store outage** under ``fail_open``: each process admits against a local,
  in-memory budget of ``fail_open_share`` * each limit per period, on top of
  whatever the store held: overspend ≤ processes * share * limit per outage
  period. ``fail_closed`` (the default) refuses with 503 instead.
* Alert thresholds, user token windows and per-key RPM / TPM changed at run time
  (``set_policy``: :mod:`trioproxy.budget.policy`, kept in the store) apply on this
  process from its next admission, and on every other process within ``limits_ttl_s``
  (each caches the store's policy that long).
* Limits changed at run time (``set_team_limits``, from any process) apply from the
  next admission on: the team's day and month claims name the team (``limit_ref``) and
  the store checks them against the limit it holds at that moment, in the same atomic
  operation. Every admission therefore goes to the store, also for teams without limits
  (``loadtest/budget_rebuild_bench.py``: admission + settle on Redis costs 0.12-0.26 ms of
  gateway CPU, 0.05 ms of it the gate's own work, and 0.05 ms of Redis CPU); kept: a
  team's counters then always hold its spend, so a limit set mid-period counts what was
  spent before it.
* **Redis state lost** (restart without persistence): nothing is admitted from empty
  state; :mod:`trioproxy.budget.recovery` rebuilds it from the ledger first.

**Outage policy.** Every store call runs under ``trio.fail_after(call_timeout_s)``.
A timeout or :class:`StoreUnavailable` marks the store down for ``probe_after_s``
(requests skip it meanwhile, so nothing waits on a dead store) and then
applies the policy: ``fail_closed`` raises ``PolicyError(OVERLOADED)`` with
``Retry-After``; ``fail_open`` admits against the local limits. After
``probe_after_s`` the next request tries the store again: recovery needs no
operator. A settle that fails is dropped: the reservation stays counted at its
reserved amount until its lease expires, which errs towards refusing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar
from zoneinfo import ZoneInfo

import trio

from trioproxy.budget.alerts import AlertSink, BudgetCheck
from trioproxy.budget.claims import Claim, Denial, initial_reservation, scaled
from trioproxy.budget.claims import usd_to_micros as _micros
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.periods import PeriodKind, period_at, retry_after_header
from trioproxy.budget.policy import Policy
from trioproxy.budget.store import (
    UNLIMITED,
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
T = TypeVar("T")
SETTLE_PATIENCE = 5
"""A settle may take this many store timeouts before its reservation is left to the lease."""
RATE_WINDOW_S = 60
"""Per-key RPM / TPM limits are sliding windows of this length."""
DEFAULT_ALERT_THRESHOLD = 0.8
"""The alert threshold of a team without ``[budgets.teams]`` entry or override."""


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    mode: Literal["fail_closed", "fail_open"] = "fail_closed"
    call_timeout_s: float = 0.5
    """Longest wait for one store call."""
    probe_after_s: float = 1.0
    """After a failure, skip the store this long (also the 503's Retry-After)."""
    fail_open_share: float = 0.05
    """``fail_open``: share of each limit one process may admit while the store is down."""


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
    ) -> None:
        self._cfg = budgets
        self._tz = ZoneInfo(budgets.timezone)
        self.store = store
        self.clock = clock
        self.outage = outage
        self.lease_s = lease_s
        self.limits_ttl_s = limits_ttl_s
        self._alerts = alerts
        self._end_user_window = end_user_window or budgets.users.get("*")
        self._limits: dict[str, tuple[TeamLimits, float]] = {}
        self._limits_loading: dict[str, trio.Event] = {}
        self._policy: tuple[Policy, float] = (Policy(), -math.inf)
        self._policy_loading: trio.Event | None = None
        self._down_until = -math.inf
        self._store_down = False
        self._local = MemoryStore()
        self.store_failures = 0
        self.recovery = recovery
        """A shared store's state-loss recovery (Redis): it journals this gate's
        reservations, and while it restores a lost state the gate keeps off the store."""

    @property
    def alerts(self) -> AlertSink | None:
        return self._alerts

    # --- limits -----------------------------------------------------------------

    def _config_limits(self, team: str) -> TeamLimits:
        tb = self._cfg.teams.get(team)
        if tb is None:
            return TeamLimits(None, None)
        daily = None if tb.daily_usd is None else _micros(tb.daily_usd)
        monthly = None if tb.monthly_usd is None else _micros(tb.monthly_usd)
        return TeamLimits(daily, monthly)

    async def team_limits(self, team: str) -> TeamLimits:
        """Run-time limits from the store (cached ``limits_ttl_s``), else config.

        With the store unreachable, the last limits read (however old), else the
        config's: a team without limits keeps being served; a team with limits then
        meets the outage policy when its reservation fails.
        """
        cached = self._limits.get(team)
        if cached is not None and trio.current_time() < cached[1]:
            return cached[0]
        pending = self._limits_loading.get(team)
        if pending is not None:  # single flight: a burst of misses makes one store call
            await pending.wait()
            return await self.team_limits(team)
        self._limits_loading[team] = done = trio.Event()
        try:
            stored = await self._call(lambda: self.store.get_team_limits(team))
            limits = stored if stored is not None else self._config_limits(team)
            self._limits[team] = (limits, trio.current_time() + self.limits_ttl_s)
        except StoreUnavailable:
            limits = cached[0] if cached is not None else self._config_limits(team)
        finally:
            del self._limits_loading[team]
            done.set()
        return limits

    async def set_team_limits(self, team: str, daily: int | None, monthly: int | None) -> None:
        """Set a team's limits in µUSD (None: no limit) for every process sharing the store."""
        await self._call(lambda: self.store.set_team_limits(team, daily, monthly))
        self._limits[team] = (TeamLimits(daily, monthly), trio.current_time() + self.limits_ttl_s)

    # --- run-time policy (thresholds, user windows, key rates) ----------------------

    def configured_threshold(self, team: str) -> float:
        tb = self._cfg.teams.get(team)
        return tb.alert_threshold if tb is not None else DEFAULT_ALERT_THRESHOLD

    def configured_window(self, user: str) -> UserWindow | None:
        return self._cfg.users.get(user) or self._cfg.users.get("*")

    async def policy(self) -> Policy:
        """The store's policy overrides, cached ``limits_ttl_s``; the last read (or none)
        while the store does not answer."""
        policy, fresh_until = self._policy
        if trio.current_time() < fresh_until:
            return policy
        if self._policy_loading is not None:  # single flight
            await self._policy_loading.wait()
            return self._policy[0]
        self._policy_loading = done = trio.Event()
        try:
            raw = await self._call(self.store.get_policy)
            policy = Policy.decode(raw)
            self._policy = (policy, trio.current_time() + self.limits_ttl_s)
        except StoreUnavailable:
            pass
        finally:
            self._policy_loading = None
            done.set()
        return policy

    async def set_policy(self, name: str, value: str) -> None:
        """Store one override (:mod:`trioproxy.budget.policy`); this process reads it back
        at once, the others within ``limits_ttl_s``."""
        await self._call(lambda: self.store.set_policy(name, value))
        self._policy = (self._policy[0], -math.inf)

    # --- store calls under the outage policy -----------------------------------

    async def _call(self, fn: Callable[[], Awaitable[T]], *, patient: bool = False) -> T:
        """One store call under the outage policy.

        A timeout marks the store down only when the store says a slow answer means
        an outage (Redis: a dead connection); a busy embedded SQLite store is
        overloaded, not down, so only the call at hand fails. ``patient`` calls
        (settles: their reservation would otherwise stand until its lease ends)
        wait ``SETTLE_PATIENCE`` times longer.
        """
        if trio.current_time() < self._down_until:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable("budget store marked down")
        if self.recovery is not None and self.recovery.rebuilding:
            await trio.lowlevel.checkpoint()
            raise StateLost("budget state being rebuilt from the ledger")
        timeout = self.outage.call_timeout_s * (SETTLE_PATIENCE if patient else 1)
        try:
            with trio.fail_after(timeout):
                result = await fn()
        except StateLost:
            self.store_failures += 1
            if self.recovery is not None:
                self.recovery.lost()
            raise
        except trio.TooSlowError as exc:
            self.store_failures += 1
            if self.store.timeouts_are_outages:
                self._mark_down(f"no answer within {timeout:g} s")
            raise StoreUnavailable(f"budget store: no answer within {timeout:g} s") from exc
        except StoreUnavailable as exc:
            self.store_failures += 1
            self._mark_down(repr(exc))
            raise StoreUnavailable(f"budget store: {exc!r}") from exc
        if self._store_down:
            self._store_down = False
            log.warning("budget store is back", extra={"fields": {"store": "budget"}})
        return result

    def _mark_down(self, why: str) -> None:
        self._down_until = trio.current_time() + self.outage.probe_after_s
        if not self._store_down:
            self._store_down = True
            log.warning(
                "budget store down (%s); outage policy %r until it answers", why,
                self.outage.mode, extra={"fields": {"store": "budget"}},
            )  # fmt: skip

    async def bucket_usage(self, bucket: str) -> int:
        """Spent + reserved in ``bucket`` now (raises ``StoreUnavailable``)."""
        return await self._call(lambda: self.store.usage(bucket, now=self.clock()))

    def _unavailable(self) -> PolicyError:
        return PolicyError(
            ErrorKind.OVERLOADED,
            "budget store unavailable; try again shortly",
            retry_after=retry_after_header(self.outage.probe_after_s),
        )

    # --- claims -----------------------------------------------------------------

    def _claims(
        self, who: Who, known: TeamLimits | None, usd: int, tokens: int, now: float, *,
        count_request: bool = False, policy: Policy | None = None,
    ) -> list[Hold]:  # fmt: skip
        """The claims of one reservation; ``count_request`` on admission only (not extend).

        ``known`` None: for the shared store, which checks the team's day and month claims
        against the limits it holds now (``limit_ref``; the config's when it holds none),
        so both are always claimed. ``known`` given (the local fallback): those limits,
        and no claim where there is no limit.
        """
        policy = policy if policy is not None else self._policy[0]
        team, user, end_user, rate = who.team, who.user, who.end_user, policy.rate(who.rate)
        holds: list[Hold] = []
        limits = self._config_limits(team) if known is None else known
        periods: tuple[tuple[PeriodKind, Literal["daily", "monthly"], int | None], ...] = (
            ("day", "daily", limits.daily_micros),
            ("month", "monthly", limits.monthly_micros),
        )
        for kind, field_, limit in periods:
            if limit is None and known is not None:
                continue
            p = period_at(kind, now, self._tz)
            bucket = f"team:{team}:{kind}:{p.name}"
            ref = None if known is not None else (team, field_)
            cap = UNLIMITED if limit is None else limit
            holds.append(Hold(kind, Claim(bucket, usd, cap, None, p.end, ref)))
        window = policy.window(user, self.configured_window(user))
        if window is not None:
            holds.append(
                Hold("user", Claim(f"user:{user}", tokens, window.tokens, window.window_s))
            )
        if end_user is not None and self._end_user_window is not None:
            w = self._end_user_window
            bucket = f"enduser:{team}:{end_user}"
            holds.append(Hold("enduser", Claim(bucket, tokens, w.tokens, w.window_s)))
        if rate is not None and rate.rpm is not None and count_request:
            holds.append(Hold("rpm", Claim(f"key:{rate.key}:rpm", 1, rate.rpm, RATE_WINDOW_S)))
        if rate is not None and rate.tpm is not None:
            claim = Claim(f"key:{rate.key}:tpm", tokens, rate.tpm, RATE_WINDOW_S)
            holds.append(Hold("tpm", claim))
        return holds

    def _denied(self, team: str, holds: Sequence[Hold], d: Denial) -> PolicyError:
        family = next(h.family for h in holds if h.claim.bucket == d.bucket)
        retry = None if d.retry_after is None else retry_after_header(d.retry_after)
        if family in ("day", "month"):
            word = "daily" if family == "day" else "monthly"
            return PolicyError(
                ErrorKind.BUDGET_EXCEEDED,
                f"team {team!r} {word} budget exhausted: ${d.used / 1e6:.6f} of "
                f"${d.limit / 1e6:.6f} spent or reserved; this request may cost "
                f"up to ${d.amount / 1e6:.6f}",
                retry_after=retry,
                details={"budget": d.bucket, "spent_usd": d.used / 1e6, "limit": d.limit / 1e6},
            )
        if family == "rpm":
            return PolicyError(
                ErrorKind.RATE_LIMITED,
                f"request rate limit: {d.used} of {d.limit} requests in the last minute",
                retry_after=retry,
                details={"budget": d.bucket, "requests": d.used, "limit": d.limit},
            )
        return PolicyError(
            ErrorKind.RATE_LIMITED,
            f"token window {d.bucket!r} full: {d.used} of {d.limit} tokens used; "
            f"this request may use up to {d.amount}",
            retry_after=retry,
            details={"budget": d.bucket, "spent_tokens": d.used, "limit": d.limit},
        )

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
            holds = self._claims(who, None, usd, tokens, now, count_request=True, policy=policy)
            denial = await self._call(
                lambda: self.store.reserve(
                    request_id, [h.claim for h in holds], now=now, lease_s=self.lease_s
                )
            )
        except StoreUnavailable:
            known = self._last_limits(team)
            holds = self._claims(who, known, usd, tokens, now, count_request=True, policy=policy)
            if not holds:  # no budget applies to this request: serve it unreserved
                return ticket
            if self.outage.mode == "fail_closed":
                raise self._unavailable() from None
            holds = [self._local_hold(h) for h in holds]
            ticket.local = True
            denial = await self._local.reserve(
                request_id, [h.claim for h in holds], now=now, lease_s=self.lease_s
            )
        if denial is not None:
            raise self._denied(team, holds, denial)
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
        known = self._last_limits(team) if ticket.local else None
        holds = self._claims(ticket.who, known, add_usd, add_tok, now)
        if ticket.local:
            holds = [self._local_hold(h) for h in holds]
        store = self._local if ticket.local else self.store
        try:
            denial = await self._call(
                lambda: store.extend(ticket.request_id, [h.claim for h in holds], now=now)
            )
        except ReservationClosed:
            raise PolicyError(ErrorKind.BUDGET_EXCEEDED, "budget reservation expired") from None
        except StoreUnavailable:
            raise self._unavailable() from None
        if denial is not None:
            raise self._denied(team, holds, denial)
        if self.recovery is not None and not ticket.local:
            self.recovery.extended(ticket.request_id, [h.claim for h in holds], now=now)
        ticket.holds.extend(holds)
        ticket.reserved_micros += add_usd
        ticket.reserved_tokens += add_tok

    async def settle(self, ticket: Ticket, cost_micros: int, tokens: int) -> None:
        """Record what the request actually consumed; idempotent. Never raises for
        a store outage (the lease covers it)."""
        if ticket.settled:
            return
        ticket.settled = True
        if not ticket.holds:
            return
        now = self.clock()
        actual = ticket.actual_by_bucket(cost_micros, tokens)
        rid, rec = ticket.request_id, None if ticket.local else self.recovery
        store = self._local if ticket.local else self.store
        try:
            if rec is None:
                await self._call(lambda: store.settle(rid, actual, now=now), patient=True)
            else:
                await self._call(lambda: rec.settle(rid, actual, now=now), patient=True)
        except StateLost:  # settled once the state is restored (``Recovery``)
            if rec is not None:
                rec.defer(rid, actual)
            return
        except StoreUnavailable as exc:
            if rec is not None:
                rec.failed(rid, actual, now=now)
            log.warning("settle of %s failed (%s); its reservation stands until lease expiry",
                        rid, exc)  # fmt: skip
            return
        await self._check_alerts(ticket, now)

    def _last_limits(self, team: str) -> TeamLimits:
        """With the store down: the limits last read from it (however old), else config."""
        cached = self._limits.get(team)
        return cached[0] if cached is not None else self._config_limits(team)

    def _local_hold(self, h: Hold) -> Hold:
        c = h.claim
        limit = math.floor(c.limit * self.outage.fail_open_share)
        return Hold(h.family, Claim(c.bucket, c.amount, limit, c.window_s, c.expires_at))

    async def _check_alerts(self, ticket: Ticket, now: float) -> None:
        if self._alerts is None or ticket.local:
            return
        limits = await self.team_limits(ticket.who.team)  # cached: one read per TTL at most
        team = ticket.who.team
        threshold = (await self.policy()).threshold(team, self.configured_threshold(team))
        if threshold is None:  # alerts off for this team
            return
        seen: set[str] = set()
        for h in ticket.holds:
            c = h.claim
            limit = limits.daily_micros if h.family == "day" else limits.monthly_micros
            if (
                h.family in ("day", "month") and limit is not None
                and c.bucket not in seen and c.expires_at is not None
            ):  # fmt: skip
                seen.add(c.bucket)
                check = BudgetCheck(ticket.who.team, c.bucket, limit, threshold, c.expires_at, now)
                self._alerts.check_nowait(check)


__all__ = ["DEFAULT_ALERT_THRESHOLD", "BudgetGate", "KeyRate", "OutagePolicy", "Ticket", "Who"]
