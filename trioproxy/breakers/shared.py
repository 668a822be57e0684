"""Breaker state shared by every worker and instance, on the same store as budgets.

The transitions stay the pure functions of :mod:`trioproxy.breakers.transitions`; the
store only keeps ``(version, state)`` per target and offers compare-and-set,
so two processes never both take the half-open probe and failures from every
process add up. Shared state is timed on the wall clock (a monotonic clock is
per process), so the ``now`` the race passes in is not used here.

Hot path: a process caches each target's shared state for ``sync_s``. A
check on a closed breaker and a success on a clean one cost no store call;
failures, probes and recoveries go through compare-and-set. A store outage
degrades to the process's own view (the cached state), never to a hang.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Protocol

import orjson
import trio

from trioproxy.breakers import transitions as breaker
from trioproxy.breakers.local import TransitionHook, announce
from trioproxy.breakers.transitions import BreakerState, Verdict
from trioproxy.config.model import BreakerConfig
from trioproxy.store.resp import RedisError, Script
from trioproxy.store.sqlite_file import open_wal

if TYPE_CHECKING:
    from trioproxy.store.redis_client import RedisClient

STORE_TIMEOUT_S = 0.5
CAS_RETRIES = 5
STATE_TTL_S = 86_400


class BreakerKV(Protocol):
    async def load(self, target: str) -> tuple[int, BreakerState]: ...

    async def cas(self, target: str, version: int, state: BreakerState) -> bool: ...


def _dump(state: BreakerState) -> bytes:
    return orjson.dumps(asdict(state))


def _load(raw: bytes | str | None) -> BreakerState:
    return BreakerState(**orjson.loads(raw)) if raw else BreakerState()


_CAS = Script("""
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""")


class RedisBreakerKV:
    def __init__(self, client: RedisClient, *, prefix: str = "tp:br:") -> None:
        self._client = client
        self._prefix = prefix

    async def load(self, target: str) -> tuple[int, BreakerState]:
        v, s = await self._client.execute("HMGET", self._prefix + target, "v", "s")
        return int(v or 0), _load(s)

    async def cas(self, target: str, version: int, state: BreakerState) -> bool:
        ok = await self._client.evalsha(
            _CAS, [self._prefix + target], [version, _dump(state), STATE_TTL_S]
        )
        return bool(ok)


class SqliteBreakerKV:
    """A table in the embedded state file; writes happen only on state changes."""

    def __init__(self, path: str) -> None:
        self._db = open_wal(path, busy_timeout_s=2.0)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS breakers(target TEXT PRIMARY KEY, v INTEGER, s BLOB)"
        )
        self._lock = trio.CapacityLimiter(1)

    async def load(self, target: str) -> tuple[int, BreakerState]:
        def read() -> tuple[int, BreakerState]:
            row = self._db.execute("SELECT v, s FROM breakers WHERE target=?", (target,)).fetchone()
            return (0, BreakerState()) if row is None else (int(row[0]), _load(row[1]))

        return await trio.to_thread.run_sync(read, limiter=self._lock)

    async def cas(self, target: str, version: int, state: BreakerState) -> bool:
        def write() -> bool:
            cur = self._db.execute(
                "INSERT INTO breakers(target, v, s) VALUES (?, ?, ?) "
                "ON CONFLICT(target) DO UPDATE SET v = excluded.v, s = excluded.s "
                "WHERE breakers.v = ?",
                (target, version + 1, _dump(state), version),
            )
            return cur.rowcount == 1

        return await trio.to_thread.run_sync(write, limiter=self._lock)


class SharedBreakers:
    def __init__(
        self,
        kv: BreakerKV,
        cfg: BreakerConfig,
        *,
        sync_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._cfg = cfg
        self._sync_s = sync_s
        self._clock = clock
        self._cache: dict[str, tuple[float, int, BreakerState]] = {}
        self._loading: dict[str, trio.Event] = {}
        self.store_errors = 0
        self.on_transition: TransitionHook | None = None

    async def _state(self, target: str, *, fresh: bool = False) -> tuple[int, BreakerState]:
        cached = self._cache.get(target)
        if cached is not None and not fresh and trio.current_time() - cached[0] < self._sync_s:
            return cached[1], cached[2]
        loading = self._loading.get(target)
        if loading is not None and not fresh:  # single flight: one store read per target
            await loading.wait()
            cached = self._cache.get(target)
            if cached is not None:
                return cached[1], cached[2]
        self._loading[target] = done = trio.Event()
        try:
            return await self._load(target, cached)
        finally:
            if self._loading.get(target) is done:
                del self._loading[target]
            done.set()

    async def _load(
        self, target: str, cached: tuple[float, int, BreakerState] | None
    ) -> tuple[int, BreakerState]:
        mono = trio.current_time()
        try:
            with trio.fail_after(STORE_TIMEOUT_S):
                version, state = await self._kv.load(target)
        except (trio.TooSlowError, RedisError, sqlite3.Error):
            self.store_errors += 1
            return (cached[1], cached[2]) if cached else (0, BreakerState())
        self._cache[target] = (mono, version, state)
        return version, state

    async def _update(
        self, target: str, change: Callable[[BreakerState], BreakerState]
    ) -> BreakerState:
        """Apply ``change`` atomically (compare-and-set, retried); returns the new state."""
        fresh = False
        for _ in range(CAS_RETRIES):
            version, state = await self._state(target, fresh=fresh)
            new = change(state)
            if new == state:
                return state
            try:
                with trio.fail_after(STORE_TIMEOUT_S):
                    if await self._kv.cas(target, version, new):
                        self._cache[target] = (trio.current_time(), version + 1, new)
                        announce(target, state, new, self.on_transition)
                        return new
            except (trio.TooSlowError, RedisError, sqlite3.Error):
                self.store_errors += 1
                self._cache[target] = (trio.current_time(), version, new)  # local view
                announce(target, state, new, self.on_transition)
                return new
            fresh = True
        return new

    async def check(self, target: str, now: float) -> Verdict:
        _, state = await self._state(target)
        if state.open_until is None:
            return Verdict.ALLOW
        wall = self._clock()
        verdict = Verdict.DENY

        def take(s: BreakerState) -> BreakerState:
            nonlocal verdict
            verdict, new = breaker.decide(s, wall)
            return new

        await self._update(target, take)
        return verdict

    async def report(
        self, target: str, now: float, *, ok: bool | None, retry_after: float | None = None
    ) -> None:
        wall = self._clock()
        if ok is True:
            await self._update(target, breaker.on_success)
        elif ok is False:
            await self._update(
                target, lambda s: breaker.on_failure(s, wall, self._cfg, retry_after)
            )
        else:
            await self._update(target, breaker.on_abandoned)

    def report_success_nowait(self, target: str) -> bool:
        """A success changes nothing when the breaker is closed as read within ``sync_s``
        (what :meth:`report` would find, with no store call); else False: await it."""
        cached = self._cache.get(target)
        return (
            cached is not None
            and trio.current_time() - cached[0] < self._sync_s
            and breaker.on_success(cached[2]) == cached[2]
        )

    async def reset(self, target: str) -> None:
        """Close the breaker at once, for every worker and instance (an operator's decision)."""
        await self._update(target, lambda s: BreakerState())

    async def refresh(self, targets: Iterable[str]) -> None:
        """Read the targets' states from the store unless read within ``sync_s``: a process
        that sends no requests (the control plane) has no view of its own."""
        for target in targets:
            await self._state(target)

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        wall = self._clock()
        return {name: st.summary(wall) for name, (_, _, st) in self._cache.items()}


__all__ = ["BreakerKV", "RedisBreakerKV", "SharedBreakers", "SqliteBreakerKV"]
