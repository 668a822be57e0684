"""The holds of one reservation: which buckets a request claims, and against what limit
(team day and month µUSD, the key user's and the end user's token windows, the key's RPM /
TPM). Pure; no I/O: the gate (:mod:`trioproxy.budget.gate`) reserves them in a store.
"""

from __future__ import annotations

import math
from typing import Literal
from zoneinfo import ZoneInfo

from trioproxy.budget import buckets
from trioproxy.budget.claims import Claim
from trioproxy.budget.limits import Limits
from trioproxy.budget.periods import PeriodKind, period_at
from trioproxy.budget.policy import Policy
from trioproxy.budget.store import UNLIMITED, TeamLimits
from trioproxy.budget.ticket import Hold, Who
from trioproxy.config.model import UserWindow

RATE_WINDOW_S = 60
"""Per-key RPM / TPM limits are sliding windows of this length."""


class Holds:
    def __init__(self, limits: Limits, tz: ZoneInfo, end_user_window: UserWindow | None) -> None:
        self._limits = limits
        self._tz = tz
        self._end_user_window = end_user_window

    def of(
        self, who: Who, known: TeamLimits | None, usd: int, tokens: int, now: float, *,
        count_request: bool = False, policy: Policy | None = None,
    ) -> list[Hold]:  # fmt: skip
        """The claims of one reservation; ``count_request`` on admission only (not extend).

        ``known`` None: for the shared store, which checks the team's day and month claims
        against the limits it holds now (``limit_ref``; the config's when it holds none),
        so both are always claimed. ``known`` given (the local fallback): those limits,
        and no claim where there is no limit.
        """
        policy = policy if policy is not None else self._limits.cached_policy
        team, user, end_user, rate = who.team, who.user, who.end_user, policy.rate(who.rate)
        holds: list[Hold] = []
        limits = self._limits.configured(team) if known is None else known
        periods: tuple[tuple[PeriodKind, Literal["daily", "monthly"], int | None], ...] = (
            ("day", "daily", limits.daily_micros),
            ("month", "monthly", limits.monthly_micros),
        )
        for kind, field_, limit in periods:
            if limit is None and known is not None:
                continue
            p = period_at(kind, now, self._tz)
            bucket = buckets.team_period(team, kind, p.name)
            ref = None if known is not None else (team, field_)
            cap = UNLIMITED if limit is None else limit
            holds.append(Hold(kind, Claim(bucket, usd, cap, None, p.end, ref)))
        window = policy.window(user, self._limits.configured_window(user))
        if window is not None:
            holds.append(
                Hold(
                    "user", Claim(buckets.user_window(user), tokens, window.tokens, window.window_s)
                )
            )
        if end_user is not None and self._end_user_window is not None:
            w = self._end_user_window
            bucket = buckets.end_user_window(team, end_user)
            holds.append(Hold("enduser", Claim(bucket, tokens, w.tokens, w.window_s)))
        if rate is not None and rate.rpm is not None and count_request:
            claim = Claim(buckets.key_rpm(rate.key), 1, rate.rpm, RATE_WINDOW_S)
            holds.append(Hold("rpm", claim))
        if rate is not None and rate.tpm is not None:
            claim = Claim(buckets.key_tpm(rate.key), tokens, rate.tpm, RATE_WINDOW_S)
            holds.append(Hold("tpm", claim))
        return holds


def local_hold(h: Hold, share: float) -> Hold:
    """``h`` against ``share`` of its limit: the local budget of a fail-open admission."""
    c = h.claim
    limit = math.floor(c.limit * share)
    return Hold(h.family, Claim(c.bucket, c.amount, limit, c.window_s, c.expires_at))


__all__ = ["RATE_WINDOW_S", "Holds", "local_hold"]
