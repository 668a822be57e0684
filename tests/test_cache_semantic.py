from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trioproxy.cache.embedder import LocalEmbedder, OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.keys import exact_key, tenant_scope
from trioproxy.cache.semantic import SemanticCache
from trioproxy.cache.vector_index import HnswIndex, VectorIndex
from trioproxy.cache.vector_pg import PgVectorIndex
from trioproxy.cache.writer import CacheWriter, WriteJob
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest, Usage

CFG = CacheConfig(exact_ttl_s=60, semantic_ttl_s=60, semantic_threshold=0.9, max_temperature=0.3)
ASKED = "how do I reverse a list in python"
PARAPHRASE = "how can I reverse a python list"  # cosine 0.98


def req(text: str, system: str | None = None, **params: Any) -> ChatRequest:
    messages = [{"role": "system", "content": system}] if system else []
    chat = {"model": "chat", "messages": [*messages, {"role": "user", "content": text}], **params}
    chat.setdefault("temperature", 0)
    return ChatRequest("openai", chat, chat, "chat", False, False, None)


def entry(text: str) -> CacheEntry:
    return CacheEntry(text, "stop", Usage(10, 5), "gpt-x", 0.002, 0.0)


@pytest.fixture(scope="session")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.fixture
async def embedder(minilm: OnnxMiniLM, nursery: trio.Nursery) -> LocalEmbedder:
    emb = LocalEmbedder(minilm)
    await nursery.start(emb.run)
    return emb


@pytest.fixture(params=["hnsw", "pgvector"])
async def index(request: pytest.FixtureRequest) -> AsyncIterator[VectorIndex]:
    if request.param == "hnsw":
        yield HnswIndex()
        return
    pg = PgVectorIndex(request.getfixturevalue("pg_url"))
    await pg.open()
    yield pg
    await pg.aclose()


@pytest.fixture
def cache(embedder: LocalEmbedder, index: VectorIndex) -> SemanticCache:
    return SemanticCache(embedder, index, MemoryExactCache())


async def test_paraphrase_hits_with_similarity(cache: SemanticCache) -> None:
    assert await cache.store(req(ASKED), "team:a", "chat", CFG, entry("use reversed()"), now=0.0)
    hit = await cache.lookup(req(PARAPHRASE), "team:a", "chat", CFG, now=1.0)
    assert hit is not None and hit.entry.text == "use reversed()"
    assert 0.95 < hit.similarity < 1.0 and hit.cached_prompt == ASKED
    strict = CacheConfig(semantic_ttl_s=60, semantic_threshold=0.995)
    assert await cache.lookup(req(PARAPHRASE), "team:a", "chat", strict, now=1.0) is None
    assert cache.stats.below_threshold == 1
    assert await cache.lookup(req(PARAPHRASE), "team:a", "chat", CFG, now=61.0) is None  # TTL


async def test_tenants_system_prompts_and_buckets_never_share(cache: SemanticCache) -> None:
    await cache.store(req(ASKED), "team:a", "chat", CFG, entry("a's answer"), now=0.0)
    assert await cache.lookup(req(ASKED), "team:b", "chat", CFG, now=1.0) is None
    assert await cache.lookup(req(ASKED), "team:a", "other-route", CFG, now=1.0) is None
    assert (
        await cache.lookup(req(ASKED, system="answer in French"), "team:a", "chat", CFG, now=1.0)
        is None
    )
    assert await cache.lookup(req(ASKED, temperature=0.3), "team:a", "chat", CFG, now=1.0) is None
    assert await cache.lookup(req(ASKED, max_tokens=5000), "team:a", "chat", CFG, now=1.0) is None
    assert await cache.lookup(req(ASKED), "team:a", "chat", CFG, now=1.0) is not None


async def test_global_scope_shares_across_teams(cache: SemanticCache) -> None:
    glob = CacheConfig(semantic_ttl_s=60, semantic_threshold=0.9, scope="global")
    await cache.store(req(ASKED), tenant_scope("a", glob), "chat", glob, entry("x"), now=0.0)
    assert await cache.lookup(req(PARAPHRASE), tenant_scope("b", glob), "chat", glob, now=1.0)


async def test_guard_rejects_near_misses_above_threshold(cache: SemanticCache) -> None:
    low = CacheConfig(semantic_ttl_s=60, semantic_threshold=0.8)
    stored = ["Convert 100 USD to EUR.", "Why is it safe to eat raw cookie dough?",
              "Write a 500-word essay about climate change."]  # fmt: skip
    asked = ["Convert 100 EUR to USD.", "Why is it not safe to eat raw cookie dough?",
             "Write a 200-word essay about climate change."]  # fmt: skip
    for s in stored:
        await cache.store(req(s), "team:a", "chat", low, entry(s), now=0.0)
    for a in asked:
        assert await cache.lookup(req(a), "team:a", "chat", low, now=1.0) is None
    assert sum(cache.stats.guard_rejects.values()) == 3


async def test_unshareable_requests_skip_the_semantic_cache(cache: SemanticCache) -> None:
    assert not await cache.store(
        req(ASKED, temperature=1.0), "team:a", "chat", CFG, entry("x"), now=0
    )
    assert not await cache.store(req(ASKED, n=2), "team:a", "chat", CFG, entry("x"), now=0)
    assert not await cache.store(req("x" * 3000), "team:a", "chat", CFG, entry("x"), now=0)
    assert cache.stats.stored == 0


async def test_flush_and_delete(cache: SemanticCache) -> None:
    await cache.store(req(ASKED), "team:a", "chat", CFG, entry("x"), now=0.0)
    hit = await cache.lookup(req(ASKED), "team:a", "chat", CFG, now=1.0)
    assert hit is not None
    assert await cache.delete(hit.namespace, hit.entry_id)
    assert await cache.lookup(req(ASKED), "team:a", "chat", CFG, now=1.0) is None
    await cache.store(req(ASKED), "team:a", "chat", CFG, entry("x"), now=2.0)
    assert await cache.flush_namespace(hit.namespace) == 1
    assert await cache.lookup(req(ASKED), "team:a", "chat", CFG, now=3.0) is None


async def test_writer_populates_both_caches_and_drops_when_full(cache: SemanticCache) -> None:
    exact = MemoryExactCache()
    writer = CacheWriter(exact=exact, semantic=cache, capacity=2)
    r = req(ASKED)
    key = exact_key(r, "team:a", "chat")
    job = WriteJob(r, "team:a", "chat", CFG, entry("x"), now=0.0, exact_key=key,
                   exact_ttl_s=60, semantic_ttl_s=60)  # fmt: skip
    assert writer.submit(job) and writer.submit(job)
    assert not writer.submit(job)  # full: skipped, never waits
    assert writer.statistics().dropped_full == 2  # one skipped write per queue
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(10):
            while writer.statistics().written < 4:  # 2 jobs x (exact + semantic)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert exact.get_nowait(key, now=1.0) is not None
    assert await cache.lookup(req(PARAPHRASE), "team:a", "chat", CFG, now=1.0) is not None


async def test_exact_cache_isolated_by_team() -> None:
    exact = MemoryExactCache()
    r = req(ASKED)
    await exact.put(exact_key(r, "team:a", "chat"), entry("a").to_bytes(), ttl_s=60, now=0)
    assert await exact.get(exact_key(r, "team:b", "chat"), now=1) is None
    assert await exact.get(exact_key(r, "team:a", "chat"), now=1) is not None
