"""Redis budget store: correct across any number of gateway instances.

Every operation is one Lua script (:mod:`.redis_scripts`) sent through the
Trio-native :class:`RedisClient`: an admission is one round trip, and Redis
runs each script atomically, so check-then-write cannot interleave between
instances. Transport failures (not connected, connection lost, no reply within
the client's ``call_timeout``) surface as :class:`StoreUnavailable`; a script
that timed out may still have run on the server (an unsettled reservation:
see the lease rule in :mod:`trioproxy.budget.store`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from trioproxy.budget.claims import Claim, Denial, merge_claims
from trioproxy.budget.redis_scripts import ADMIT, SETTLE, USAGE
from trioproxy.budget.store import ReservationClosed, StoreUnavailable, TeamLimits
from trioproxy.store.redis_client import RedisClient, RedisError, RedisUnavailable, Script

RETENTION_S = 2 * 86400.0
"""Closed reservations and ended periods stay readable this long."""
WINDOW_SLACK_S = 60
"""Window keys outlive their last write by the window plus this."""


def _fmt(x: float) -> str:
    return repr(float(x))


class RedisStore:
    timeouts_are_outages = True

    def __init__(self, client: RedisClient, *, prefix: str = "tpb:") -> None:
        self._client = client
        self._prefix = prefix

    async def _call(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        try:
            return await self._client.evalsha(script, keys, args)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def _claim_args(self, claims: Sequence[Claim], now: float) -> list[str]:
        out: list[str] = []
        for c in claims:
            if c.window_s is not None:
                ttl = str(math.ceil(c.window_s) + WINDOW_SLACK_S)
            elif c.expires_at is not None:
                ttl = str(max(1, math.ceil(c.expires_at - now + RETENTION_S)))
            else:
                ttl = ""
            window = "" if c.window_s is None else _fmt(c.window_s)
            team, period = c.limit_ref or ("", "")
            out += [c.bucket, str(c.amount), str(c.limit), window, ttl, team, period]
        return out

    async def _admit(
        self, mode: str, rid: str, claims: Sequence[Claim], now: float, lease_s: float
    ) -> Denial | None:
        merged = merge_claims(claims)
        args = [mode, _fmt(now), _fmt(lease_s), self._prefix, rid, str(int(RETENTION_S))]
        args += [str(len(merged)), *self._claim_args(merged, now)]
        try:
            reply = await self._call(ADMIT, [self._prefix + "r:" + rid], args)
        except RedisError as exc:
            if exc.code == "DUPLICATE":
                raise ValueError(f"reservation {rid!r} already exists") from None
            raise
        status = reply[0]
        if status == b"ok":
            return None
        if status == b"closed":
            raise ReservationClosed(rid)
        bucket, used, retry = reply[1].decode(), int(reply[2]), reply[3].decode()
        limit = int(reply[4])
        claim = next(c for c in merged if c.bucket == bucket)
        if claim.window_s is not None:
            retry_after = float(retry) if retry else None
        else:
            retry_after = None if claim.expires_at is None else max(0.0, claim.expires_at - now)
        return Denial(bucket, used, limit, claim.amount, retry_after)

    async def reserve(
        self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float
    ) -> Denial | None:
        return await self._admit("reserve", rid, claims, now, lease_s)

    async def extend(self, rid: str, claims: Sequence[Claim], *, now: float) -> Denial | None:
        return await self._admit("extend", rid, claims, now, 0.0)

    async def settle(self, rid: str, actual: Mapping[str, int], *, now: float) -> None:
        args = [_fmt(now), self._prefix, rid]
        for bucket, amount in actual.items():
            args += [bucket, str(amount)]
        await self._call(SETTLE, [self._prefix + "r:" + rid], args)

    async def usage(self, bucket: str, *, now: float) -> int:
        return int(await self._call(USAGE, [], [self._prefix, bucket, _fmt(now)]))

    async def _execute(self, *args: str | int) -> Any:
        try:
            return await self._client.execute(*args)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def get_team_limits(self, team: str) -> TeamLimits | None:
        raw = await self._execute("HMGET", self._prefix + "limits:" + team, "daily", "monthly")
        if raw[0] is None:
            return None
        daily, monthly = (int(v) if v else None for v in raw)
        return TeamLimits(daily, monthly)

    async def set_team_limits(
        self, team: str, daily_micros: int | None, monthly_micros: int | None
    ) -> None:
        daily = "" if daily_micros is None else str(daily_micros)
        monthly = "" if monthly_micros is None else str(monthly_micros)
        key = self._prefix + "limits:" + team
        await self._execute("HSET", key, "daily", daily, "monthly", monthly)

    async def get_policy(self) -> dict[str, str]:
        raw = await self._execute("HGETALL", self._prefix + "policy")
        flat = [x for kv in raw.items() for x in kv] if isinstance(raw, dict) else raw
        pairs = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        return dict(zip(pairs[::2], pairs[1::2], strict=True))

    async def set_policy(self, name: str, value: str) -> None:
        await self._execute("HSET", self._prefix + "policy", name, value)

    async def mark_once(self, key: str, *, now: float, expires_at: float) -> bool:
        ttl = max(1, math.ceil(expires_at - now))
        reply = await self._execute("SET", self._prefix + "mark:" + key, "1", "NX", "EX", ttl)
        return reply is not None


__all__ = ["RedisStore"]
