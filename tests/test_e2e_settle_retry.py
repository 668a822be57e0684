"""One dropped Redis connection while requests are being answered leaves no reservation of a
served request open: the settles it lost (and those skipped while the store was marked
down) are sent again until they land, so the team's spend in the store comes back to the
ledger's to the µUSD, long before any lease ends.

Found by a review probe (``CLIENT KILL TYPE normal`` during 200 answers): 100 served
requests kept their reservations, $99.40 of phantom spend the store counted until their
lease ended, and at their reserved amount after it. Here the kill is made deterministic:
Redis holds the gateway's writes (``CLIENT PAUSE WRITE``) until a settle is seen waiting in
it, then the connection is killed with that settle on it."""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

import redis
import trio

from tests.chat_client import chat_body, post_chat
from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.budget.periods import period_at
from trioproxy.budget.redis_store import RedisStore
from trioproxy.budget.store import StoreUnavailable
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings

N = 20
# 100 $/Mtok: a request reserves its worst case (about 1,000 tokens: 0.1 $) and costs a
# few cents' hundredths; the team's $100 a day fits all of them
BODY = chat_body("settle me", model="r", max_tokens=1000)


def settings(url: str, redis_url: str, state_dir: str) -> Settings:
    return parse_settings(
        {
            "storage": {"state_dir": state_dir, "redis_url": redis_url},
            "providers": {"p": {"kind": "openai", "base_url": url, "api_key_env": "K"}},
            "models": {"m": {"provider": "p", "input_per_mtok": 100, "output_per_mtok": 100}},
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
            "budgets": {"teams": {"t1": {"daily_usd": 100.0}}, "store_timeout_s": 0.5},
        },
        env={"K": "x"},
    )


def settle_waiting_in_redis(r: redis.Redis) -> bool:
    """A script (the gateway's settles: every admission is answered) held by the pause."""
    return any(
        "b" in c.get("flags", "") and c.get("cmd") in ("eval", "evalsha") for c in r.client_list()
    )


async def test_a_dropped_redis_connection_leaves_no_served_reservation_open(
    nursery: trio.Nursery, redis_url: str, tmp_path: object
) -> None:
    sim = await start_simulator(nursery)
    sim.sim.hold = trio.Event()  # answers wait: every request is admitted first
    g = await start_gateway(nursery, settings(sim.url, redis_url, str(tmp_path)))
    assert g.app.admission is not None
    gate = g.app.admission.gate
    rec, store = gate.recovery, gate.store
    assert rec is not None and isinstance(store, RedisStore)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await post_chat(g.url, KEY, BODY, client_timeout_s=60)).status_code)

    with redis.Redis.from_url(redis_url) as r:
        async with trio.open_nursery() as requests:
            for _ in range(N):
                requests.start_soon(one)
            with trio.fail_after(30):
                while rec.holding < N:  # all admitted, waiting for their answers
                    await trio.sleep(0.01)
            await trio.to_thread.run_sync(lambda: r.client_pause(600_000, all=False))
            try:
                sim.sim.hold.set()  # the answers come; their settles wait in Redis
                with trio.fail_after(30):
                    while not await trio.to_thread.run_sync(settle_waiting_in_redis, r):
                        await trio.sleep(0.01)
                killed = await trio.to_thread.run_sync(
                    lambda: r.client_kill_filter(_type="normal", skipme=True)
                )
            finally:
                await trio.to_thread.run_sync(r.client_unpause)
    assert killed >= 1
    assert statuses == [200] * N

    day = period_at("day", time.time(), ZoneInfo(g.settings.budgets.timezone))
    in_ledger = sum(x.cost_micros for x in g.sink.records if x.kind == "request")
    assert 0 < in_ledger < N * 100_000 // 10  # far below what the requests reserved

    async def in_store() -> int | None:
        try:
            return await store.usage(f"team:t1:day:{day.name}", now=time.time())
        except StoreUnavailable:  # the gateway's client is still reconnecting
            return None

    held = None
    with trio.move_on_after(60):  # the lease is 900 s: this is the retry, not the lease
        while (held := await in_store()) != in_ledger:
            await trio.sleep(0.05)
    assert held == in_ledger, f"store {held} µUSD, ledger {in_ledger} µUSD: reservations open"
    settles = gate.settles
    assert settles is not None and settles.landed >= 1 and settles.queued == 0
    assert settles.dropped == settles.expired == 0
