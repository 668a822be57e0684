"""Circuit breaker per target, as pure transitions on a small state value.

closed ──(failure_threshold consecutive failures)──▶ open
open ──(cool-down elapsed)──▶ half-open: exactly one probe is let through
half-open ──probe succeeds──▶ closed ; ──probe fails──▶ open (new cool-down)

A provider's ``retry-after`` holds the breaker open until that time whatever
the failure count. Time is an input (``now``, seconds on any monotonic clock),
so every transition is tested on explicit values. State is kept per process by
:class:`trioproxy.breakers.local.LocalBreakers` or shared across processes by
:class:`trioproxy.breakers.shared.SharedBreakers`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from trioproxy.config.model import BreakerConfig


class Verdict(enum.Enum):
    ALLOW = "allow"
    PROBE = "probe"
    """Open, cool-down over: this one attempt tests the target."""
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class BreakerState:
    failures: int = 0
    open_until: float | None = None
    probe_until: float | None = None
    """A probe is in flight until this time (then another may go)."""
    opened_at: float | None = None
    """When it last went from closed to open (kept while it stays open)."""

    def is_open(self, now: float) -> bool:
        return self.open_until is not None and (
            now < self.open_until or self.probe_until is not None
        )

    def summary(self, now: float) -> dict[str, object]:
        """What the dashboard, /readyz and /metrics show of a target's breaker."""
        is_open = self.is_open(now)
        return {
            "open": is_open,
            "failures": self.failures,
            "next_probe_in_s": max(0.0, (self.open_until or now) - now),
            "opened_for_s": max(0.0, now - self.opened_at)
            if is_open and self.opened_at is not None
            else None,
            "probing": self.probe_until is not None and now < self.probe_until,
        }


PROBE_TIMEOUT_S = 60.0
"""A probe that never reports back (crash) frees the half-open slot after this."""


def decide(state: BreakerState, now: float) -> tuple[Verdict, BreakerState]:
    if state.open_until is None:
        return Verdict.ALLOW, state
    if now < state.open_until:
        return Verdict.DENY, state
    if state.probe_until is not None and now < state.probe_until:
        return Verdict.DENY, state
    return Verdict.PROBE, replace(state, probe_until=now + PROBE_TIMEOUT_S)


def on_success(state: BreakerState) -> BreakerState:
    return BreakerState()


def on_failure(
    state: BreakerState, now: float, cfg: BreakerConfig, retry_after: float | None = None
) -> BreakerState:
    failures = state.failures + 1
    open_until = state.open_until
    if failures >= cfg.failure_threshold or state.probe_until is not None:
        open_until = now + cfg.cooldown_s
    if retry_after is not None and retry_after > 0:
        open_until = max(open_until or 0.0, now + retry_after)
    opened_at = state.opened_at if state.open_until is not None else None
    if open_until is not None and opened_at is None:
        opened_at = now
    return BreakerState(failures, open_until, None, opened_at)


def transition(old: BreakerState, new: BreakerState) -> str | None:
    """The state ``new`` entered from ``old`` (for logs and metrics): ``open``, ``half_open``
    (a probe goes), ``closed``; None if it stayed where it was."""
    if new.open_until is None:
        return "closed" if old.open_until is not None else None
    if old.open_until is None or (old.probe_until is not None and new.probe_until is None):
        return "open" if new.open_until != old.open_until or old.open_until is None else None
    if new.probe_until is not None and old.probe_until is None:
        return "half_open"
    return None


def on_abandoned(state: BreakerState) -> BreakerState:
    """The attempt was cancelled (hedge loser, client left): no evidence either way."""
    return replace(state, probe_until=None)


__all__ = [
    "BreakerState",
    "Verdict",
    "decide",
    "on_abandoned",
    "on_failure",
    "on_success",
    "transition",
]
