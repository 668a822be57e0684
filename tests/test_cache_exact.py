from __future__ import annotations

import trio

from trioproxy.cache.exact import MemoryExactCache, RedisExactCache
from trioproxy.cache.writer import CacheWriter
from trioproxy.config.routes import CacheConfig
from trioproxy.core.types import ChatRequest
from trioproxy.pipeline.caching import CachePlan, ResponseCache
from trioproxy.store.redis_client import RedisClient


async def test_memory_ttl_on_explicit_clock() -> None:
    c = MemoryExactCache()
    await c.put("ns:a", b"x", ttl_s=10, now=100.0)
    assert await c.get("ns:a", now=109.9) == b"x"
    assert await c.get("ns:a", now=110.0) is None
    assert c.statistics().expirations == 1
    await c.put("ns:b", b"x", ttl_s=0, now=100.0)  # ttl 0 = do not cache
    assert await c.get("ns:b", now=100.0) is None


async def test_memory_bounds_evict_least_recently_used() -> None:
    c = MemoryExactCache(max_entries=3, max_bytes=10)
    for k in "abc":
        await c.put(f"n:{k}", b"12", ttl_s=60, now=0)
    assert await c.get("n:a", now=1) == b"12"  # a is now most recent
    await c.put("n:d", b"12", ttl_s=60, now=2)  # over 3 entries: b goes
    assert await c.get("n:b", now=3) is None
    assert await c.get("n:a", now=3) == b"12"
    await c.put("n:e", b"12345", ttl_s=60, now=4)  # 11 bytes > 10: c (least recent) goes
    s = c.statistics()
    assert (s.entries, s.bytes, s.evictions) == (3, 9, 2)
    assert await c.get("n:c", now=5) is None and await c.get("n:d", now=5) == b"12"


async def test_memory_delete_and_flush_namespace() -> None:
    c = MemoryExactCache()
    for key in ("n1:a", "n1:b", "n2:a"):
        await c.put(key, b"v", ttl_s=60, now=0)
    assert await c.delete("n1:a") and not await c.delete("n1:a")
    assert await c.flush_namespace("n1") == 1
    assert await c.get("n2:a", now=1) == b"v"


async def test_redis_exact_cache(redis_url: str) -> None:
    client = RedisClient(redis_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        c = RedisExactCache(client)
        await c.put("n1:a", b"\x00bin", ttl_s=60, now=0)
        await c.put("n1:b", b"v", ttl_s=60, now=0)
        await c.put("n2:a", b"v", ttl_s=60, now=0)
        assert await c.get("n1:a", now=0) == b"\x00bin"
        ttl_ms = await client.execute("PTTL", "tp:c:n1:a")
        assert 59_000 < ttl_ms <= 60_000
        await c.put("n1:short", b"v", ttl_s=0.05, now=0)
        await trio.sleep(0.2)
        assert await c.get("n1:short", now=0) is None
        assert await c.delete("n2:a") and await c.get("n2:a", now=0) is None
        assert await c.flush_namespace("n1") == 2
        assert await c.get("n1:b", now=0) is None
        nursery.cancel_scope.cancel()


async def test_an_unreadable_entry_is_a_miss_and_is_dropped_behind_the_request() -> None:
    """The lookup answers a miss without waiting on a write: the delete is queued with the
    cache writer's puts (before the put the request's answer may queue) and runs there."""
    exact = MemoryExactCache()
    await exact.put("ns:k", b"not an entry", ttl_s=60, now=0)
    cache = ResponseCache(exact, None, CacheWriter(exact=exact, semantic=None), clock=lambda: 1)
    plan = CachePlan("t", "chat", CacheConfig(exact_ttl_s=60), "ns:k", None)
    req = ChatRequest("openai", {}, {}, "chat", False, False, None)
    hit, _ = await cache.lookup(plan, req)
    assert hit is None
    assert await exact.get("ns:k", now=1) == b"not an entry"  # not touched by the request
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.writer.run)
        with trio.fail_after(10):
            while await exact.get("ns:k", now=1) is not None:
                await trio.lowlevel.checkpoint()  # the writer's turn
        nursery.cancel_scope.cancel()
    assert cache.writer.statistics().written == 1
