"""Redis down at start-up and mid-run: the gateway serves or refuses cleanly and recovers."""

from __future__ import annotations

import httpx
import trio

from tests.chat_client import chat_body, post_chat
from tests.fixtures_gateway import start_gateway, start_simulator
from tests.fixtures_servers import RedisServer
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings

BODY = chat_body("outage?", model="r")


def settings(url: str, redis_url: str, state_dir: str, *, budget: bool) -> Settings:
    data: dict[str, object] = {
        "storage": {"state_dir": state_dir, "redis_url": redis_url},
        "providers": {"p": {"kind": "openai", "base_url": url, "api_key_env": "K"}},
        "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
        "routes": {"r": {"chains": {"default": [{"model": "m"}]}, "cache": {"exact_ttl_s": 600}}},
        "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
        "budgets": {"store_timeout_s": 0.5},
    }
    if budget:
        data["budgets"] = {"teams": {"t1": {"daily_usd": 100.0}}, "store_timeout_s": 0.5}
    return parse_settings(data, env={"K": "x"})


async def post(url: str) -> httpx.Response:
    return await post_chat(url, KEY, BODY, client_timeout_s=10)


async def test_cache_on_redis_down_is_a_miss_then_recovers(
    nursery: trio.Nursery,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: object,
) -> None:
    sim = await start_simulator(nursery)
    await trio.to_thread.run_sync(redis_server.stop)
    g = await start_gateway(nursery, settings(sim.url, redis_url, str(tmp_path), budget=False))
    for _ in range(2):  # starts without Redis; the cache is a miss, never an error
        r = await post(g.url)
        assert r.status_code == 200 and r.headers["x-trioproxy-cache"] == "miss"
    await trio.to_thread.run_sync(redis_server.start)
    with trio.fail_after(15):  # reconnects by itself; then answers come from the cache
        while (await post(g.url)).headers["x-trioproxy-cache"] != "exact":
            await trio.sleep(0.2)


async def test_budget_store_down_fails_closed_then_recovers(
    nursery: trio.Nursery,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: object,
) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, settings(sim.url, redis_url, str(tmp_path), budget=True))
    assert (await post(g.url)).status_code == 200
    await trio.to_thread.run_sync(redis_server.stop)
    with trio.fail_after(5):  # refused cleanly and fast, never hung
        r = await post(g.url)
    assert r.status_code == 503 and r.json()["error"]["code"] == "gateway_overloaded"
    assert "retry-after" in r.headers
    await trio.to_thread.run_sync(redis_server.start)
    with trio.fail_after(15):
        while (await post(g.url)).status_code != 200:
            await trio.sleep(0.2)
