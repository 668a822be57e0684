"""Budget alerts: crossing the alert threshold (80% by default) and reaching
100% each fire once per period per budget.

The gate hands finished (and refused) requests' team buckets to the sink through
:func:`check_alerts` (:func:`alert_refusal`), which skip a bucket the settle's totals show
below every level. :meth:`AlertSink.check_nowait` never blocks: it keeps at most one pending
check per bucket (a newer check of a bucket already pending replaces it: its usage read covers
the older one, so a busy team costs one usage read per check round, not one per request), at
most ``capacity`` buckets; a check of another bucket past that is dropped and counted
(``statistics().dropped``, plus a warning). A background task (:meth:`AlertSink.run`, started in the app's
nursery) reads the bucket's usage, deduplicates in the store (``mark_once``:
SET NX / INSERT OR IGNORE, keyed by bucket, which names the period, and level),
writes one JSON log line and, when configured, POSTs the same JSON to the
webhook with bounded retries. With a ``history`` (:class:`AlertHistory`; the dashboard's
admin store), every fired alert and the outcome of its webhook delivery (status,
attempts, last error) are recorded for the Alerts page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import orjson
import trio

from trioproxy.budget.store import BudgetStore, StoreUnavailable
from trioproxy.core.backoff import BackoffPolicy

if TYPE_CHECKING:  # httpx (~5 MB of RSS) is imported only where a webhook is sent
    import httpx

    from trioproxy.budget.claims import Denial
    from trioproxy.budget.limits import Limits
    from trioproxy.budget.ticket import Hold, Ticket

log = logging.getLogger("trioproxy.budget.alerts")

AlertLevel = Literal["threshold", "limit"]
ALERT_RETENTION_S = 2 * 86400.0
"""Dedupe marks outlive their period by this much."""


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    team: str
    bucket: str
    limit: int
    threshold: float
    expires_at: float
    now: float


@dataclass(frozen=True, slots=True)
class Alert:
    team: str
    budget: str
    level: AlertLevel
    threshold: float
    spent_usd: float
    limit_usd: float
    at: float


@dataclass(frozen=True, slots=True)
class AlertStatistics:
    queued: int
    dropped: int
    fired: int
    webhook_failures: int


Delivery = Literal["pending", "delivered", "rejected", "failed", "no webhook"]


class AlertHistory(Protocol):
    """Where fired alerts and their deliveries are kept. Implementations never raise but
    for cancellation (a history that fails loses an entry, never an alert)."""

    async def alert_fired(self, alert: Alert, delivery: Delivery) -> int | None:
        """Record ``alert``; its reference for :meth:`delivery_done` (None: not recorded)."""
        ...

    async def delivery_done(
        self, ref: int, delivery: Delivery, attempts: int, last_error: str | None, at: float
    ) -> None: ...


def levels_reached(used: int, limit: int, threshold: float) -> list[AlertLevel]:
    out: list[AlertLevel] = []
    if limit > 0 and used >= threshold * limit:
        out.append("threshold")
    if used >= limit:
        out.append("limit")
    return out


class AlertSink:
    def __init__(
        self,
        store: BudgetStore,
        *,
        webhook_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        capacity: int = 1024,
        webhook_attempts: int = 3,
        webhook_backoff_s: float = 0.5,
        webhook_timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self._webhook_url = webhook_url
        self._http = http
        self._capacity = capacity
        self._pending: dict[str, BudgetCheck] = {}
        self._wake = trio.Event()
        self.webhook_attempts = webhook_attempts
        self.webhook_backoff_s = webhook_backoff_s
        self._webhook_backoff = BackoffPolicy(webhook_backoff_s, 60.0, jitter=False)
        self.webhook_timeout_s = webhook_timeout_s
        self._dropped = self._fired = self._webhook_failures = 0
        self.history: AlertHistory | None = None
        self.clock = time.time

    def statistics(self) -> AlertStatistics:
        queued = len(self._pending)
        return AlertStatistics(queued, self._dropped, self._fired, self._webhook_failures)

    def check_nowait(self, check: BudgetCheck) -> None:
        pending = self._pending.get(check.bucket)
        if pending is not None:  # the newer check's read covers the older one
            if check.now >= pending.now:
                self._pending[check.bucket] = check
            return
        if len(self._pending) >= self._capacity:
            self._dropped += 1
            log.warning(
                "alert queue full; dropped check of %s (%d dropped)", check.bucket, self._dropped
            )
            return
        self._pending[check.bucket] = check
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the queued buckets; with a webhook URL and no client given, the webhook's
        client lives as long as this task."""
        if self._webhook_url is not None and self._http is None:
            import httpx

            async with httpx.AsyncClient() as http:
                self._http = http
                try:
                    await self._checks(task_status)
                finally:
                    self._http = None
        else:
            await self._checks(task_status)

    async def _checks(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            if not self._pending:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            check = self._pending.pop(next(iter(self._pending)))
            try:
                await self._process(check)
            except StoreUnavailable as exc:
                log.warning("alert check of %s skipped: %s", check.bucket, exc)

    async def _process(self, check: BudgetCheck) -> None:
        used = await self._store.usage(check.bucket, now=check.now)
        for level in levels_reached(used, check.limit, check.threshold):
            key = f"alert:{check.bucket}:{level}"
            expires = check.expires_at + ALERT_RETENTION_S
            if not await self._store.mark_once(key, now=check.now, expires_at=expires):
                continue
            alert = Alert(
                check.team, check.bucket, level, check.threshold,
                used / 1e6, check.limit / 1e6, check.now,
            )  # fmt: skip
            await self.fire(alert)

    async def fire(self, alert: Alert) -> None:
        self._fired += 1
        fields = {"event": "budget_alert", **asdict(alert)}
        body = orjson.dumps(fields)  # the webhook's JSON; the log line carries the same keys
        log.warning(
            "budget_alert: team %s at %s of its %s limit",
            alert.team,
            alert.level,
            alert.budget,
            extra={"fields": fields},
        )
        webhook = self._webhook_url is not None and self._http is not None
        ref = None
        if self.history is not None:
            ref = await self.history.alert_fired(alert, "pending" if webhook else "no webhook")
        if not webhook:
            return
        delivery, attempts, error = await self._deliver(body)
        if delivery == "failed":
            self._webhook_failures += 1
            log.warning("budget alert webhook failed after %d attempts: %s", attempts, error)
        if self.history is not None and ref is not None:
            await self.history.delivery_done(ref, delivery, attempts, error, self.clock())

    async def _deliver(self, body: bytes) -> tuple[Delivery, int, str | None]:
        """POST ``body`` with bounded retries: (outcome, attempts made, last error)."""
        import httpx

        assert self._webhook_url is not None and self._http is not None
        error: str | None = None
        for attempt in range(self.webhook_attempts):
            try:
                with trio.fail_after(self.webhook_timeout_s):
                    resp = await self._http.post(
                        self._webhook_url,
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                if resp.status_code < 400:
                    return "delivered", attempt + 1, None
                error = f"HTTP {resp.status_code}"
                if resp.status_code < 500:  # the receiver refuses it: retrying will not help
                    return "rejected", attempt + 1, error
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
            except trio.TooSlowError:
                error = f"no answer within {self.webhook_timeout_s:g} s"
            if attempt + 1 < self.webhook_attempts:
                await trio.sleep(self._webhook_backoff.delay(attempt))
        return "failed", self.webhook_attempts, error


async def alert_refusal(
    sink: AlertSink | None,
    limits: Limits,
    ticket: Ticket,
    holds: Sequence[Hold],
    denial: Denial,
    now: float,
) -> None:
    """A team refused at a level has no settle to tell the alert sink: check the refused
    period with the refusal's spent-or-reserved total (the ticket keeps only what it
    holds: a refused hold is never settled)."""
    if not ticket.local:
        refused = [h for h in holds if h.claim.bucket == denial.bucket]
        await check_alerts(sink, limits, ticket, now, {denial.bucket: denial.used}, refused)


async def check_alerts(
    sink: AlertSink | None,
    limits: Limits,
    ticket: Ticket,
    now: float,
    totals: Mapping[str, int] | None = None,
    holds: Sequence[Hold] | None = None,
) -> None:
    """Hand ``sink`` (the gate's) a check of each team period the request drew on that has a
    limit, unless the settle's ``totals`` (the store's, read with it) show the bucket
    below every alert level: only a request whose settle leaves a bucket at or past a
    level (the threshold, the limit) queues its check (the sink reads the bucket again
    and fires each level once per period). ``holds``: the periods to check instead of the
    ticket's (a refusal's, :func:`alert_refusal`: after a limit is lowered below the
    spend, every request is refused and none settles, yet the level is reached)."""
    if sink is None or ticket.local:
        return
    team = ticket.who.team
    cached_limits, cached_policy = limits.fresh(team)
    if cached_limits is not None and cached_policy is not None:
        team_limits, policy = cached_limits, cached_policy
    else:  # one store read per TTL at most, as cancellation-proof as the settle (bounded
        with trio.CancelScope(shield=True):  # by the read's own timeout)
            team_limits = await limits.team(team)
            policy = await limits.policy()
    threshold = policy.threshold(team, limits.configured_threshold(team))
    if threshold is None:  # alerts off for this team
        return
    seen: set[str] = set()
    for h in ticket.holds if holds is None else holds:
        c = h.claim
        limit = team_limits.daily_micros if h.family == "day" else team_limits.monthly_micros
        if (
            h.family in ("day", "month") and limit is not None
            and c.bucket not in seen and c.expires_at is not None
        ):  # fmt: skip
            seen.add(c.bucket)
            used = None if totals is None else totals.get(c.bucket)
            if used is not None and not levels_reached(used, limit, threshold):
                continue
            check = BudgetCheck(ticket.who.team, c.bucket, limit, threshold, c.expires_at, now)
            sink.check_nowait(check)


__all__ = [
    "Alert",
    "AlertHistory",
    "AlertLevel",
    "AlertSink",
    "AlertStatistics",
    "BudgetCheck",
    "Delivery",
    "alert_refusal",
    "check_alerts",
    "levels_reached",
]
