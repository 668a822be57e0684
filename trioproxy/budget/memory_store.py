"""An in-process :class:`BudgetStore`: the reference semantics, and the local
limiter the gate falls back on when the shared store is down (``fail_open``).

Only correct within one process; never the configured store of a gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trioproxy.budget.claims import Claim, Denial, distribute, merge_claims
from trioproxy.budget.periods import window_retry_after, window_usage
from trioproxy.budget.store import (
    NO_OVERRIDES,
    ReservationClosed,
    TeamLimits,
    effective_limit,
    merged_limits,
)


@dataclass(slots=True)
class _Bucket:
    window_s: float | None
    expires_at: float | None
    total: int = 0
    """Period counters only."""
    log: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)
    """Windows only: (rid, seq) -> (ts, amount)."""


@dataclass(slots=True)
class _Reservation:
    lease_s: float
    lease_until: float
    closed: bool = False
    holds: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """bucket -> [(seq, amount)] in the order taken."""
    seq: int = 0


class MemoryStore:
    timeouts_are_outages = False

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._res: dict[str, _Reservation] = {}
        self._limits: dict[str, TeamLimits] = {}
        self._marks: dict[str, float] = {}
        self._policy: dict[str, str] = {}

    def _used(self, b: _Bucket, now: float) -> int:
        if b.window_s is None:
            return b.total
        return window_usage(b.log.values(), now, b.window_s)

    def _check(self, claims: Sequence[Claim], now: float) -> Denial | None:
        for c in claims:
            b = self._buckets.get(c.bucket)
            used = 0 if b is None else self._used(b, now)
            ref = c.limit_ref
            limit = effective_limit(c, None if ref is None else self._limits.get(ref[0]))
            if used + c.amount > limit:
                if c.window_s is None:
                    retry = None if c.expires_at is None else max(0.0, c.expires_at - now)
                else:
                    entries = () if b is None else b.log.values()
                    retry = window_retry_after(entries, now, c.window_s, limit, c.amount)
                return Denial(c.bucket, used, limit, c.amount, retry)
        return None

    def _take(self, rid: str, r: _Reservation, claims: Sequence[Claim], now: float) -> None:
        for c in claims:
            b = self._buckets.setdefault(c.bucket, _Bucket(c.window_s, c.expires_at))
            r.seq += 1
            if b.window_s is None:
                b.total += c.amount
            else:
                b.log[(rid, r.seq)] = (now, c.amount)
            r.holds.setdefault(c.bucket, []).append((r.seq, c.amount))

    async def reserve(
        self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float,
        usage: dict[str, int] | None = None,
    ) -> Denial | None:  # fmt: skip
        if rid in self._res:
            raise ValueError(f"reservation {rid!r} already exists")
        claims = merge_claims(claims)
        denial = self._check(claims, now)
        if denial is None:
            r = self._res[rid] = _Reservation(lease_s, now + lease_s)
            self._take(rid, r, claims, now)
            if usage is not None:
                for c in claims:
                    if c.window_s is not None:
                        usage[c.bucket] = self._used(self._buckets[c.bucket], now)
        return denial

    async def extend(self, rid: str, claims: Sequence[Claim], *, now: float) -> Denial | None:
        r = self._res.get(rid)
        if r is None or r.closed or now > r.lease_until:
            raise ReservationClosed(rid)
        claims = merge_claims(claims)
        denial = self._check(claims, now)
        if denial is None:
            self._take(rid, r, claims, now)
            r.lease_until = now + r.lease_s
        return denial

    async def settle(
        self, rid: str, actual: Mapping[str, int], *, now: float
    ) -> dict[str, int] | None:
        r = self._res.get(rid)
        if r is None or r.closed:
            return None
        r.closed = True
        if now > r.lease_until:
            return None  # expired: final at the reserved amount
        totals: dict[str, int] = {}
        for bucket, holds in r.holds.items():
            b = self._buckets.get(bucket)
            if b is None:
                continue
            shares = distribute(actual.get(bucket, 0), [a for _, a in holds])
            for (seq, held), share in zip(holds, shares, strict=True):
                if b.window_s is None:
                    b.total += share - held
                elif (rid, seq) in b.log:
                    ts, _ = b.log[(rid, seq)]
                    b.log[(rid, seq)] = (ts, share)
            if b.window_s is None:
                totals[bucket] = b.total
        return totals

    async def held(self, rid: str, *, now: float) -> list[tuple[str, int]] | None:
        r = self._res.get(rid)
        if r is None or r.closed or now > r.lease_until:
            return None
        taken = sorted(
            (seq, bucket, amount) for bucket, hs in r.holds.items() for seq, amount in hs
        )
        return [(bucket, amount) for _, bucket, amount in taken]

    async def usage(self, bucket: str, *, now: float) -> int:
        b = self._buckets.get(bucket)
        return 0 if b is None else self._used(b, now)

    async def get_team_limits(self, team: str) -> TeamLimits | None:
        return self._limits.get(team)

    async def set_team_limits(
        self, team: str, daily_micros: int | None, monthly_micros: int | None
    ) -> None:
        self._limits[team] = TeamLimits(daily_micros, monthly_micros)

    async def update_team_limits(
        self, team: str, changes: Mapping[str, int | None]
    ) -> tuple[TeamLimits, TeamLimits]:
        old = self._limits.get(team, NO_OVERRIDES)
        new = merged_limits(old, changes)
        if new != old:
            self._limits[team] = new
        return old, new

    async def get_policy(self) -> dict[str, str]:
        return dict(self._policy)

    async def set_policy(self, name: str, value: str) -> None:
        self._policy[name] = value

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        held = self._policy.get(name)
        if held == expected:
            self._policy[name] = value
        return held

    async def mark_once(self, key: str, *, now: float, expires_at: float) -> bool:
        until = self._marks.get(key)
        if until is not None and until > now:
            return False
        self._marks[key] = expires_at
        return True

    def prune(self, now: float) -> None:
        """Drop expired period buckets, slid-out window entries (and a window left empty),
        old reservations and expired marks."""
        for name, b in list(self._buckets.items()):
            if b.window_s is None:
                if b.expires_at is not None and b.expires_at <= now:
                    del self._buckets[name]
            else:
                cutoff = now - b.window_s
                b.log = {k: v for k, v in b.log.items() if v[0] > cutoff}
                if not b.log:
                    del self._buckets[name]
        for rid, r in list(self._res.items()):
            if r.closed or now > r.lease_until:
                del self._res[rid]
        for key, until in list(self._marks.items()):
            if until <= now:
                del self._marks[key]


__all__ = ["MemoryStore"]
