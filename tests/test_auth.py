"""Run-time API keys (the dashboard's admin store) as the key ring resolves them: the store's
answer "no such key" is a 401, but a store that fails or does not answer is a 503 the caller
may retry, never a 401 that tells it its key is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trioproxy.admin.keys import StoredKey
from trioproxy.admin.store import AdminStore
from trioproxy.config import hash_key
from trioproxy.config.model import ApiKeyConfig
from trioproxy.edge import auth
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.keycache import REFUSED_TTL_S, KnownKeys, RefusedKeys
from trioproxy.errors import CallerError, ErrorKind, PolicyError

KEY = "tp-made-in-the-dashboard-0123456789"
HEADERS = {b"authorization": f"Bearer {KEY}".encode()}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bearer(key: str) -> dict[bytes, bytes]:
    return {b"authorization": f"Bearer {key}".encode()}


class CountingSource:
    """A key store that knows ``known`` and counts its look-ups; ``gate`` holds them."""

    def __init__(self, known: dict[str, ApiKeyConfig] | None = None) -> None:
        self.known = known or {}
        self.calls: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate: trio.Event | None = None

    async def lookup(self, key_hash: str) -> ApiKeyConfig | None:
        self.calls.append(key_hash)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await trio.lowlevel.checkpoint()
            return self.known.get(key_hash)
        finally:
            self.in_flight -= 1


async def test_a_stored_key_resolves_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    store = AdminStore.open_sync(tmp_path)
    try:
        clock = FakeClock()
        ring = KeyRing({}, store, clock=clock)
        with pytest.raises(CallerError) as refused:
            await ring.resolve(HEADERS)
        assert refused.value.kind is ErrorKind.INVALID_API_KEY and refused.value.status == 401
        assert await store.add_key(StoredKey(hash_key(KEY), "bot", "ops", "ann"))
        # created right after being refused: still refused within REFUSED_TTL_S (documented)
        with pytest.raises(CallerError):
            await ring.resolve(HEADERS)
        clock.now += REFUSED_TTL_S
        found = await ring.resolve(HEADERS)
        assert found.name == "bot" and found.team == "ops"
    finally:
        store.close()


async def test_a_failing_key_store_is_a_503_not_a_401(tmp_path: Path) -> None:
    store = AdminStore.open_sync(tmp_path)
    assert await store.add_key(StoredKey(hash_key(KEY), "bot", "ops", "ann"))
    store.close()  # every call now fails (as with its database down): StoreError
    with pytest.raises(PolicyError) as refused:
        await KeyRing({}, store).resolve(HEADERS)
    assert refused.value.kind is ErrorKind.OVERLOADED and refused.value.status == 503
    assert refused.value.retry_after is not None


def test_refused_keys_expire_on_the_clock_and_stay_bounded() -> None:
    memo = RefusedKeys(ttl_s=1.0, max_size=3)
    memo.remember("a", 10.0)
    assert memo.refused("a", 10.0) and memo.refused("a", 10.999)
    assert not memo.refused("a", 11.0) and len(memo) == 0  # expired: dropped
    for i, h in enumerate("abcde"):
        memo.remember(h, 20.0 + i * 0.01)
    assert len(memo) == 3  # the least recently refused went first
    assert not memo.refused("a", 20.1) and not memo.refused("b", 20.1)
    assert memo.refused("e", 20.1)
    memo.remember("z", 30.0)  # the old ones, expired, are forgotten on the way
    assert len(memo) == 1


async def test_unknown_keys_cost_one_store_lookup_per_key_per_ttl() -> None:
    clock, source = FakeClock(), CountingSource()
    ring = KeyRing({}, source, clock=clock)
    keys = [f"tp-random-{i}" for i in range(50)]
    for _ in range(3):
        for key in keys:
            with pytest.raises(CallerError) as refused:
                await ring.resolve(bearer(key))
            assert refused.value.status == 401
    assert len(source.calls) == 50 and len(set(source.calls)) == 50
    clock.now += REFUSED_TTL_S  # the TTL is over: each is asked once more
    for key in keys:
        with pytest.raises(CallerError):
            await ring.resolve(bearer(key))
    assert len(source.calls) == 100


async def test_concurrent_lookups_are_limited_and_a_burst_of_one_key_asks_once() -> None:
    clock, source = FakeClock(), CountingSource()
    source.gate = trio.Event()
    ring = KeyRing({}, source, clock=clock)
    outcomes: list[int] = []

    async def call(key: str) -> None:
        try:
            await ring.resolve(bearer(key))
        except (CallerError, auth.PolicyError) as err:
            outcomes.append(err.status)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(call, "tp-same-unknown")
        while not source.calls:  # the first look-up is in the store
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        assert source.in_flight == 1  # the others wait for the limiter, not on the store
        source.gate.set()
    assert source.calls == [hash_key("tp-same-unknown")]  # one look-up for the burst
    assert outcomes == [401] * 10
    assert source.most_in_flight == auth.LOOKUPS_AT_ONCE


async def test_a_full_lookup_queue_is_a_503_at_once() -> None:
    source = CountingSource()
    source.gate = trio.Event()
    ring = KeyRing({}, source, clock=FakeClock())
    statuses: list[int] = []

    async def call(key: str) -> None:
        try:
            await ring.resolve(bearer(key))
        except (CallerError, auth.PolicyError) as err:
            statuses.append(err.status)

    async with trio.open_nursery() as nursery:
        for i in range(auth.LOOKUPS_AT_ONCE + auth.LOOKUPS_WAITING_MAX):
            nursery.start_soon(call, f"tp-k{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert statuses == []
        with pytest.raises(auth.PolicyError) as refused:  # one more: no wait at all
            await ring.resolve(bearer("tp-one-too-many"))
        assert refused.value.kind is ErrorKind.OVERLOADED and refused.value.status == 503
        source.gate.set()
    assert sorted(statuses) == [401] * (auth.LOOKUPS_AT_ONCE + auth.LOOKUPS_WAITING_MAX)


TTL_S = 5.0


async def test_a_hot_dashboard_key_costs_one_store_lookup_per_ttl() -> None:
    clock = FakeClock()
    source = CountingSource({hash_key(KEY): ApiKeyConfig("bot", hash_key(KEY), "ops", "ann")})
    ring = KeyRing({}, source, clock=clock, known_ttl_s=TTL_S)
    for _ in range(100):
        assert (await ring.resolve(HEADERS)).name == "bot"
        clock.now += TTL_S / 200
    assert len(source.calls) == 1  # 100 requests within the TTL: one look-up
    clock.now = 100.0 + TTL_S  # a hit does not extend the answer's life
    assert (await ring.resolve(HEADERS)).name == "bot"
    assert len(source.calls) == 2


async def test_a_burst_of_one_dashboard_key_asks_the_store_once() -> None:
    source = CountingSource({hash_key(KEY): ApiKeyConfig("bot", hash_key(KEY), "ops", "ann")})
    source.gate = trio.Event()
    ring = KeyRing({}, source, clock=FakeClock(), known_ttl_s=TTL_S)
    names: list[str] = []

    async def call() -> None:
        names.append((await ring.resolve(HEADERS)).name)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        source.gate.set()
    assert names == ["bot"] * 10 and len(source.calls) == 1


class ReadThenHeld(CountingSource):
    """A store that read the key's row, and whose answer is held on its way back."""

    async def lookup(self, key_hash: str) -> ApiKeyConfig | None:
        row = self.known.get(key_hash)
        assert self.gate is not None
        await self.gate.wait()
        return row


async def test_a_look_up_overtaken_by_a_revoke_in_this_process_is_not_remembered() -> None:
    """The dashboard (same process) revokes the key and forgets it while a look-up that read
    the key before is out: that request is served (it came first), the next is asked again
    (the old answer was remembered for the whole TTL)."""
    digest = hash_key(KEY)
    source = ReadThenHeld({digest: ApiKeyConfig("bot", digest, "ops", "ann")})
    source.gate = trio.Event()
    ring = KeyRing({}, source, clock=FakeClock(), known_ttl_s=TTL_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ring.resolve, HEADERS)
        await trio.testing.wait_all_tasks_blocked()
        del source.known[digest]  # revoked in the store...
        ring.known.forget(digest)  # ...and forgotten here (keys_page.revoke_key)
        source.gate.set()
    with pytest.raises(CallerError):
        await ring.resolve(HEADERS)


async def test_a_revoked_or_rotated_key_stops_on_every_worker_within_the_ttl(
    tmp_path: Path,
) -> None:
    """Two workers' key rings over one admin store (the SQLite file a host's workers share);
    the dashboard changes the key through its own handle on that file."""
    dashboard = AdminStore.open_sync(tmp_path)
    workers = [AdminStore.open_sync(tmp_path), AdminStore.open_sync(tmp_path)]
    other = "tp-another-dashboard-key-9876543210"
    try:
        clock = FakeClock()
        rings = [KeyRing({}, w, clock=clock, known_ttl_s=TTL_S) for w in workers]
        assert await dashboard.add_key(StoredKey(hash_key(KEY), "bot", "ops", "ann"))
        assert await dashboard.add_key(StoredKey(hash_key(other), "cron", "ops", "ann"))
        for ring in rings:
            assert (await ring.resolve(HEADERS)).name == "bot"
            assert (await ring.resolve(bearer(other))).name == "cron"
        clock.now += 1.0
        await dashboard.revoke_key("bot", clock.now)
        new = "tp-rotated-dashboard-key-0000000000"
        await dashboard.replace_key("cron", StoredKey(hash_key(new), "cron", "ops", "ann"), 1.0)
        for ring in rings:  # within the TTL of their answers: still served (documented)
            assert (await ring.resolve(HEADERS)).name == "bot"
            assert (await ring.resolve(bearer(other))).name == "cron"
            assert (await ring.resolve(bearer(new))).name == "cron"  # the new secret at once
        clock.now = 100.0 + TTL_S
        for ring in rings:
            for key in (KEY, other):
                with pytest.raises(CallerError) as refused:
                    await ring.resolve(bearer(key))
                assert refused.value.status == 401
            assert (await ring.resolve(bearer(new))).name == "cron"
    finally:
        for store in (dashboard, *workers):
            store.close()


async def test_config_keys_win_over_a_remembered_store_answer() -> None:
    clock = FakeClock()
    stored = ApiKeyConfig("from-store", hash_key(KEY), "store", "ann")
    source = CountingSource({hash_key(KEY): stored})
    ring = KeyRing({}, source, clock=clock, known_ttl_s=TTL_S)
    assert (await ring.resolve(HEADERS)).name == "from-store"
    configured = ApiKeyConfig("from-config", hash_key(KEY), "config", "ann")
    reloaded = ring.reloaded({hash_key(KEY): configured})  # a SIGHUP adds it to the config
    assert reloaded.source is source and reloaded.known.ttl_s == TTL_S
    assert (await reloaded.resolve(HEADERS)).name == "from-config"
    assert len(source.calls) == 1


def test_known_keys_expire_from_the_answer_and_stay_bounded() -> None:
    known = KnownKeys(ttl_s=2.0, max_size=3)
    key = ApiKeyConfig("k", "a", "ops", "ann")
    known.remember("a", key, 10.0)
    assert known.get("a", 11.999) is key
    assert known.get("a", 12.0) is None and len(known) == 0  # expired: dropped
    for i, h in enumerate("abcde"):
        known.remember(h, key, 20.0 + i * 0.01)
    assert len(known) == 3  # the oldest answers went first
    assert known.get("a", 20.1) is None and known.get("e", 20.1) is key
    known.forget("e")
    assert known.get("e", 20.1) is None
    known.remember("z", key, 30.0)  # the expired ones are dropped on the way
    assert len(known) == 1
    off = KnownKeys(ttl_s=0.0)  # server.key_cache_ttl_s = 0: no memory
    off.remember("a", key, 10.0)
    assert off.get("a", 10.0) is None
