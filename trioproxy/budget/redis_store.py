"""Redis budget store: correct across any number of gateway instances.

Every operation is one Lua script (:mod:`.redis_scripts`) sent through the
Trio-native :class:`RedisClient`: an admission is one round trip, and Redis
runs each script atomically, so check-then-write cannot interleave between
instances. Transport failures (not connected, connection lost, no reply within
the client's ``call_timeout``) surface as :class:`StoreUnavailable`; a script
that timed out may still have run on the server (an unsettled reservation:
see the lease rule in :mod:`trioproxy.budget.store`).

**Epoch.** Every admission and settle first checks the ``epoch`` key (one ``GET`` inside
the script): without it the state was lost and the script refuses (:class:`StateLost`)
instead of counting from $0. :meth:`initialise` writes a fresh epoch for an empty store
with nothing to rebuild (tests); a gateway rebuilds from the ledger
(:mod:`trioproxy.budget.recovery`), which writes it through :meth:`restore`.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from trioproxy.budget.claims import Claim, Denial, merge_claims
from trioproxy.budget.overrides import team_limits
from trioproxy.budget.rebuild import Counter, WindowItem
from trioproxy.budget.redis_scripts import ADMIT, RESTORE, SETTLE, SWAP_POLICY, UPDATE_LIMITS, USAGE
from trioproxy.budget.store import (
    NO_OVERRIDES,
    ReservationClosed,
    StateLost,
    StoreUnavailable,
    TeamLimits,
    merged_limits,
)
from trioproxy.store.redis_client import RedisClient, RedisError, RedisUnavailable, Script

log = logging.getLogger(__name__)
RETENTION_S = 2 * 86400.0
"""Closed reservations and ended periods stay readable this long."""
WRITE_BATCH = 500
"""Team limits written back at once by :meth:`RedisStore.write_overrides` (well under the
client's ``max_pending``)."""
WINDOW_SLACK_S = 60
"""Window keys outlive their last write by the window plus this."""


def _fmt(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True, slots=True)
class Replayed:
    """A reservation this instance made, written again into a rebuilt state: ``open``
    with what it reserved (its settle follows), or closed with what it consumed."""

    rid: str
    closed: bool
    lease_until: float
    lease_s: float
    holds: tuple[tuple[Claim, float], ...]
    """Each claim (``amount``: reserved, or consumed if closed) and when it was taken."""


@dataclass(frozen=True, slots=True)
class Restore:
    """One :data:`RESTORE` call's worth of state."""

    counters: Sequence[Counter] = ()
    windows: Sequence[WindowItem] = ()
    counted: Sequence[str] = ()
    replayed: Sequence[Replayed] = ()

    def size(self) -> int:
        return (
            len(self.counters)
            + len(self.windows)
            + len(self.counted)
            + sum(1 + len(r.holds) for r in self.replayed)
        )


class RedisStore:
    timeouts_are_outages = True

    def __init__(self, client: RedisClient, *, prefix: str = "tpb:") -> None:
        self._client = client
        self._prefix = prefix
        self.epoch: str | None = None
        """The epoch the last answer carried."""
        self.on_new_epoch: Callable[[str, str], None] | None = None
        """Called with (old, new) when an answer carries another epoch than the last one
        (another instance rebuilt the state)."""

    def _saw(self, raw: bytes) -> None:
        epoch = raw.decode()
        old, self.epoch = self.epoch, epoch
        if old is not None and old != epoch and self.on_new_epoch is not None:
            self.on_new_epoch(old, epoch)

    async def _call(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        try:
            return await self._client.evalsha(script, keys, args)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def _claim_args(self, claims: Sequence[Claim], now: float) -> list[str]:
        out: list[str] = []
        for c in claims:
            window = "" if c.window_s is None else _fmt(c.window_s)
            team, period = c.limit_ref or ("", "")
            out += [c.bucket, str(c.amount), str(c.limit), window, _ttl(c, now), team, period]
        return out

    async def _admit(
        self, mode: str, rid: str, claims: Sequence[Claim], now: float, lease_s: float,
        usage: dict[str, int] | None = None,
    ) -> Denial | None:  # fmt: skip
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
            self._saw(reply[1])
            if usage is not None:  # the window buckets' usage after this reservation
                for i in range(2, len(reply) - 1, 2):
                    usage[reply[i].decode()] = int(reply[i + 1])
            return None
        if status == b"lost":
            raise StateLost("redis: the budget state was lost (no epoch)")
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
        self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float,
        usage: dict[str, int] | None = None,
    ) -> Denial | None:  # fmt: skip
        return await self._admit("reserve", rid, claims, now, lease_s, usage)

    async def extend(self, rid: str, claims: Sequence[Claim], *, now: float) -> Denial | None:
        return await self._admit("extend", rid, claims, now, 0.0)

    async def settle(self, rid: str, actual: Mapping[str, int], *, now: float) -> None:
        await self.settle_known(rid, actual, now=now)

    async def settle_known(self, rid: str, actual: Mapping[str, int], *, now: float) -> bool:
        """:meth:`settle`; False when the state does not hold the reservation (it was
        made in a state since lost). Raises :class:`StateLost` without an epoch."""
        args = [_fmt(now), self._prefix, rid]
        for bucket, amount in actual.items():
            args += [bucket, str(amount)]
        reply = await self._call(SETTLE, [self._prefix + "r:" + rid], args)
        if reply[0] == b"lost":
            raise StateLost("redis: the budget state was lost (no epoch)")
        self._saw(reply[1])
        return bool(reply[0] != b"missing")

    async def charge_unheld(
        self, rid: str, claims: Sequence[Claim], *, at: float, now: float
    ) -> bool:
        """Count request ``rid`` (started at ``at``) at ``claims`` (what it consumed, per
        bucket) when this state never held its reservation: it was made in a state lost since
        (a dead process's request, its journal recovered after the rebuild), unless the
        rebuild counted its ledger record (the counted set). Written as a closed reservation
        (:data:`RESTORE`'s replay, one atomic script), so a second charge, or a settle, of
        ``rid`` changes nothing. True when written; False when the state holds ``rid`` or
        the rebuild counted it, or ``at`` lies more than ``RETENTION_S`` ago (a reservation
        this state took then may be gone). Raises :class:`StateLost` without an epoch or
        when it changes under the call (a rebuild: try again)."""
        if now - at >= RETENTION_S:
            return False
        epoch = await self.read_epoch()
        if epoch is None:
            raise StateLost("redis: the budget state was lost (no epoch)")
        spent = Replayed(rid, True, now, 0.0, tuple((c, at) for c in claims))
        status, written = await self.restore(
            Restore(replayed=[spent]), mode="replay", epoch=epoch, now=now, counted_ttl_s=1
        )
        if status != "ok":
            raise StateLost(f"redis: the budget state changed under a charge ({status})")
        return written == "1"

    async def held(self, rid: str, *, now: float) -> list[tuple[str, int]] | None:
        reply = await self._execute("HMGET", self._prefix + "r:" + rid, "c", "h", "lu")
        closed, holds, until = reply
        if closed is None or closed == b"1" or holds is None or until is None:
            return None
        if now > float(until):
            return None
        items = orjson.loads(holds)  # [[bucket, seq, amount, windowed], ...]; Lua's {} is empty
        return [(str(b), int(a)) for b, _, a, _ in items] if isinstance(items, list) else []

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
        key = self._prefix + "limits:" + team
        await self._execute("HSET", key, "daily", _micros(daily_micros), "monthly",
                            _micros(monthly_micros))  # fmt: skip

    async def update_team_limits(
        self, team: str, changes: Mapping[str, int | None]
    ) -> tuple[TeamLimits, TeamLimits]:
        merged_limits(NO_OVERRIDES, changes)  # (names only daily and monthly, or ValueError)
        args = [_micros(NO_OVERRIDES.daily_micros), _micros(NO_OVERRIDES.monthly_micros)]
        for name, value in changes.items():
            args += [name, _micros(value)]
        reply = await self._call(UPDATE_LIMITS, [self._prefix + "limits:" + team], args)
        daily, monthly, new_daily, new_monthly = (int(v) if v else None for v in reply)
        return TeamLimits(daily, monthly), TeamLimits(new_daily, new_monthly)

    async def get_policy(self) -> dict[str, str]:
        raw = await self._execute("HGETALL", self._prefix + "policy")
        flat = [x for kv in raw.items() for x in kv] if isinstance(raw, dict) else raw
        pairs = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        return dict(zip(pairs[::2], pairs[1::2], strict=True))

    async def set_policy(self, name: str, value: str) -> None:
        await self._execute("HSET", self._prefix + "policy", name, value)

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        want = ["0", ""] if expected is None else ["1", expected]
        reply = await self._call(SWAP_POLICY, [self._prefix + "policy"], [name, *want, value])
        return None if int(reply[0]) == 0 else bytes(reply[1]).decode()

    async def write_overrides(self, entries: Mapping[str, str]) -> None:
        """Write run-time overrides back (:mod:`trioproxy.budget.overrides`): a rebuild,
        before its new epoch. The policy entries in one HSET; the teams' limits
        ``WRITE_BATCH`` commands in flight at once (the client pipelines them on its one
        connection): a few round trips for thousands of overrides, not one each."""
        policy: list[str] = []
        teams: list[tuple[str, TeamLimits]] = []
        for name, value in entries.items():
            try:
                limits = team_limits(name, value)
            except (ValueError, KeyError, TypeError) as exc:  # never stops a rebuild
                log.warning("ignored budget override %r: %r", name, exc)
                continue
            if limits is None:
                policy += (name, value)
            else:
                teams.append(limits)
        if policy:
            await self._execute("HSET", self._prefix + "policy", *policy)
        failed: list[StoreUnavailable] = []

        async def one(team: str, limits: TeamLimits) -> None:
            try:
                await self.set_team_limits(team, limits.daily_micros, limits.monthly_micros)
            except StoreUnavailable as exc:
                failed.append(exc)

        for i in range(0, len(teams), WRITE_BATCH):
            async with trio.open_nursery() as nursery:
                for team, held in teams[i : i + WRITE_BATCH]:
                    nursery.start_soon(one, team, held)
            if failed:
                raise failed[0]

    async def mark_once(self, key: str, *, now: float, expires_at: float) -> bool:
        ttl = max(1, math.ceil(expires_at - now))
        reply = await self._execute("SET", self._prefix + "mark:" + key, "1", "NX", "EX", ttl)
        return reply is not None

    # --- epoch and rebuild --------------------------------------------------------

    async def wait_connected(self) -> None:
        await self._client.wait_connected()

    async def read_epoch(self) -> str | None:
        raw = await self._execute("GET", self._prefix + "epoch")
        if raw is not None:
            self._saw(raw)
        return None if raw is None else str(raw.decode())

    async def initialise(self) -> bool:
        """Start an empty state (a new epoch) if the store holds none; True if it did.
        Only right when there is no spend to rebuild (no ledger)."""
        epoch = new_epoch()
        done = await self._execute("SET", self._prefix + "epoch", epoch, "NX")
        await self.read_epoch()
        return done is not None

    async def lock_rebuild(self, token: str, lease_s: float) -> bool:
        """Take the rebuild lock for ``lease_s`` (one rebuilder across instances)."""
        ms, key = max(1, math.ceil(lease_s * 1000)), self._prefix + "rebuild"
        if await self._execute("SET", key, token, "NX", "PX", ms) is not None:
            return True
        if await self._execute("GET", key) == token.encode():  # ours, from a failed attempt
            await self._execute("PEXPIRE", key, ms)
            return True
        return False

    async def restore(
        self, part: Restore, *, mode: str, epoch: str, token: str = "", final: bool = False,
        now: float, counted_ttl_s: float,
    ) -> tuple[str, str]:  # fmt: skip
        """Write ``part`` (:data:`RESTORE`); returns the script's status and detail."""
        args: list[str] = [mode, self._prefix, epoch, token, "1" if final else "0", _fmt(now),
                           str(max(1, math.ceil(counted_ttl_s))), str(len(part.counters))]  # fmt: skip
        for c in part.counters:
            args += [
                c.bucket,
                str(c.amount),
                str(max(1, math.ceil(c.expires_at - now + RETENTION_S))),
            ]
        args.append(str(len(part.windows)))
        for w in part.windows:
            ttl = str(math.ceil(w.window_s) + WINDOW_SLACK_S)
            args += [w.bucket, w.member, _fmt(w.ts), str(w.amount), _fmt(w.window_s), ttl]
        args += [str(len(part.counted)), *part.counted, str(len(part.replayed))]
        for r in part.replayed:
            args += [r.rid, "1" if r.closed else "0", _fmt(r.lease_until), _fmt(r.lease_s),
                     str(int(RETENTION_S)), str(len(r.holds))]  # fmt: skip
            for claim, ts in r.holds:
                window = "" if claim.window_s is None else _fmt(claim.window_s)
                args += [claim.bucket, str(claim.amount), window, _ttl(claim, now), _fmt(ts)]
        reply = await self._call(RESTORE, [], args)
        status = reply[0].decode()
        detail = reply[1] if len(reply) > 1 else b""
        if status == "ok" and mode == "rebuild" and final:
            self._saw(epoch.encode())
        return status, detail.decode() if isinstance(detail, bytes) else str(detail)


def _micros(value: int | None) -> str:
    """A limit as the store holds it: '' for none."""
    return "" if value is None else str(value)


def _ttl(c: Claim, now: float) -> str:
    if c.window_s is not None:
        return str(math.ceil(c.window_s) + WINDOW_SLACK_S)
    if c.expires_at is not None:
        return str(max(1, math.ceil(c.expires_at - now + RETENTION_S)))
    return ""


def new_epoch() -> str:
    return f"{int(time.time())}-{secrets.token_hex(6)}"


__all__ = ["RedisStore", "Replayed", "Restore", "new_epoch"]
