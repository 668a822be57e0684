from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trioproxy.cache.embedder import LocalEmbedder, OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.keys import exact_key, tenant_scope
from trioproxy.cache.probing import ProbeTracker
from trioproxy.cache.semantic import SemanticCache, SemanticHit
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
    return CacheEntry(text, "stop", Usage(10, 5), "gpt-x", 2_000, 0.0)


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
def cache(embedder: LocalEmbedder, index: VectorIndex, minilm: OnnxMiniLM) -> SemanticCache:
    return SemanticCache(embedder, index, MemoryExactCache(), vocabulary=minilm.vocabulary())


async def lookup(cache: SemanticCache, *args: Any, **kwargs: Any) -> SemanticHit | None:
    return (await cache.lookup(*args, **kwargs)).hit


async def test_paraphrase_hits_with_similarity(cache: SemanticCache) -> None:
    assert await cache.store(req(ASKED), "team:a", "chat", CFG, entry("use reversed()"), now=0.0)
    hit = await lookup(cache, req(PARAPHRASE), "team:a", "chat", CFG, now=1.0)
    assert hit is not None and hit.entry.text == "use reversed()"
    assert 0.95 < hit.similarity < 1.0 and hit.cached_prompt == ASKED
    strict = CacheConfig(semantic_ttl_s=60, semantic_threshold=0.995)
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", strict, now=1.0) is None
    assert cache.stats.below_threshold == 1
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", CFG, now=61.0) is None  # TTL


async def test_tenants_system_prompts_and_buckets_never_share(cache: SemanticCache) -> None:
    await cache.store(req(ASKED), "team:a", "chat", CFG, entry("a's answer"), now=0.0)
    assert await lookup(cache, req(ASKED), "team:b", "chat", CFG, now=1.0) is None
    assert await lookup(cache, req(ASKED), "team:a", "other-route", CFG, now=1.0) is None
    assert (
        await lookup(cache, req(ASKED, system="answer in French"), "team:a", "chat", CFG, now=1.0)
        is None
    )
    assert await lookup(cache, req(ASKED, temperature=0.3), "team:a", "chat", CFG, now=1.0) is None
    assert await lookup(cache, req(ASKED, max_tokens=5000), "team:a", "chat", CFG, now=1.0) is None
    assert await lookup(cache, req(ASKED), "team:a", "chat", CFG, now=1.0) is not None


async def test_global_scope_shares_across_teams(cache: SemanticCache) -> None:
    glob = CacheConfig(semantic_ttl_s=60, semantic_threshold=0.9, scope="global")
    await cache.store(req(ASKED), tenant_scope("a", glob), "chat", glob, entry("x"), now=0.0)
    assert await lookup(cache, req(PARAPHRASE), tenant_scope("b", glob), "chat", glob, now=1.0)


async def test_guard_rejects_near_misses_above_threshold(cache: SemanticCache) -> None:
    low = CacheConfig(semantic_ttl_s=60, semantic_threshold=0.8)
    stored = ["Convert 100 USD to EUR.", "Why is it safe to eat raw cookie dough?",
              "Write a 500-word essay about climate change."]  # fmt: skip
    asked = ["Convert 100 EUR to USD.", "Why is it not safe to eat raw cookie dough?",
             "Write a 200-word essay about climate change."]  # fmt: skip
    for s in stored:
        await cache.store(req(s), "team:a", "chat", low, entry(s), now=0.0)
    for a in asked:
        assert await lookup(cache, req(a), "team:a", "chat", low, now=1.0) is None
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
    hit = await lookup(cache, req(ASKED), "team:a", "chat", CFG, now=1.0)
    assert hit is not None
    assert await cache.delete(hit.namespace, hit.entry_id)
    assert await lookup(cache, req(ASKED), "team:a", "chat", CFG, now=1.0) is None
    await cache.store(req(ASKED), "team:a", "chat", CFG, entry("x"), now=2.0)
    assert await cache.flush_namespace(hit.namespace) == 1
    assert await lookup(cache, req(ASKED), "team:a", "chat", CFG, now=3.0) is None


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
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", CFG, now=1.0) is not None


async def test_exact_cache_isolated_by_team() -> None:
    exact = MemoryExactCache()
    r = req(ASKED)
    await exact.put(exact_key(r, "team:a", "chat"), entry("a").to_bytes(), ttl_s=60, now=0)
    assert await exact.get(exact_key(r, "team:b", "chat"), now=1) is None
    assert await exact.get(exact_key(r, "team:a", "chat"), now=1) is not None


async def test_a_miss_embeds_once_and_its_answer_reuses_the_vector(
    cache: SemanticCache, embedder: LocalEmbedder
) -> None:
    before = embedder.statistics().embedded
    out = await cache.lookup(req(ASKED), "team:a", "chat", CFG, now=0.0)
    assert out.hit is None and out.embedding is not None and out.embedding.tokens is not None
    stored = await cache.store(
        req(ASKED), "team:a", "chat", CFG, entry("x"), now=0.0, embedding=out.embedding
    )
    assert stored and embedder.statistics().embedded == before + 1
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", CFG, now=1.0) is not None


async def test_verifier_refuses_band_hits_the_guard_lets_through(cache: SemanticCache) -> None:
    band = CacheConfig(semantic_ttl_s=60, semantic_band=(0.8, 1.0))
    pairs = [("Sort this array in JavaScript.", "Sort this array in place in JavaScript."),
             ("How do I center a div horizontally?", "How do I center a div vertically?"),
             ("Give me a chicken curry recipe", "Give me a chicken curry recipe without cream")]  # fmt: skip
    for stored, _ in pairs:
        await cache.store(req(stored), "team:a", "chat", band, entry(stored), now=0.0)
    for _, asked in pairs:
        assert await lookup(cache, req(asked), "team:a", "chat", band, now=1.0) is None
    assert cache.stats.verifier_rejects == 1  # "in place" (cosine 0.98)
    assert cache.stats.guard_rejects["antonym"] == 1  # vertically, an antonym in place
    assert cache.stats.guard_rejects["negation"] == 1
    # from the ceiling up the verifier is skipped (the guard still runs)
    lax = CacheConfig(semantic_ttl_s=60, semantic_band=(0.8, 0.95))
    hit = await lookup(cache, req(pairs[0][1]), "team:a", "chat", lax, now=1.0)
    assert hit is not None and hit.similarity >= 0.95


async def test_without_token_vectors_band_hits_are_refused(
    embedder: LocalEmbedder, index: VectorIndex
) -> None:
    blind = SemanticCache(embedder, index, MemoryExactCache())  # no vocabulary
    await blind.store(req(ASKED), "team:a", "chat", CFG, entry("x"), now=0.0)
    assert await lookup(blind, req(PARAPHRASE), "team:a", "chat", CFG, now=1.0) is None
    assert await lookup(blind, req(ASKED), "team:a", "chat", CFG, now=1.0) is not None  # same text


async def test_confirmation_by_distinct_keys_before_sharing(cache: SemanticCache) -> None:
    cfg = CacheConfig(semantic_ttl_s=60, confirm_users=3)
    await cache.store(req(ASKED), "team:a", "chat", cfg, entry("a's"), now=0.0, writer="ka")
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", cfg, now=1.0, asker="ka")
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", cfg, now=1.0, asker="kb") is None
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", cfg, now=1.0, asker="kb") is None
    assert cache.stats.unconfirmed == 2  # kb twice is still one confirmation
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", cfg, now=2.0, asker="kc") is None
    hit = await lookup(cache, req(PARAPHRASE), "team:a", "chat", cfg, now=3.0, asker="kd")
    assert hit is not None and hit.entry.text == "a's"  # ka + kb + kc
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", cfg, now=3.0, asker="kb")
    # another key's answer to the same text leaves the writer's record (and count) alone
    assert not await cache.store(
        req(ASKED), "team:a", "chat", cfg, entry("kb's"), now=4.0, writer="kb"
    )
    got = await lookup(cache, req(ASKED), "team:a", "chat", cfg, now=5.0, asker="kf")
    assert got is not None and got.entry.text == "a's"
    # off by default: any key of the scope is served at once
    assert await lookup(cache, req(PARAPHRASE), "team:a", "chat", CFG, now=3.0, asker="ke")


async def test_near_threshold_misses_flag_a_probing_key(cache: SemanticCache) -> None:
    cache.probes = ProbeTracker(limit=10)
    cfg = CacheConfig(semantic_ttl_s=60)  # default band: floor 0.80
    await cache.store(req("Convert 100 USD to EUR."), "team:a", "chat", cfg, entry("x"), now=0.0)
    for i in range(10):
        asked = f"Convert {101 + i} USD to EUR."
        got = await lookup(cache, req(asked), "team:a", "chat", cfg, now=1.0, asker="prober")
        assert got is None
    assert cache.probes.near_misses == 10 and cache.probes.flags["prober"] == 1
    assert await lookup(cache, req("What is a monad?"), "team:a", "chat", cfg, now=1.0) is None
    assert cache.probes.near_misses == 10  # a far miss is no probe


def test_probe_tracker_counts_within_a_sliding_window() -> None:
    t = ProbeTracker(window_s=10.0, limit=3, max_keys=2)
    assert not t.observe("k", 0.0) and not t.observe("k", 5.0)
    assert not t.observe("k", 11.0)  # the miss at 0.0 slid out
    assert t.observe("k", 12.0) and t.flags["k"] == 1
    assert not t.observe("other", 12.0) and not t.observe("third", 12.0)
    assert len(t._seen) == 2  # bounded: the least recently seen key was dropped


async def test_an_answer_longer_than_the_callers_cap_is_not_served(cache: SemanticCache) -> None:
    """One max_tokens bucket spans 65-256: an answer of 200 tokens (stored for a cap of
    256) was served to a caller who allowed 70 (upstream would have cut it at 70)."""
    long = CacheEntry("a long answer", "stop", Usage(10, 200), "gpt-x", 2_000, 0.0)

    def capped(text: str, cap: int) -> ChatRequest:
        r = req(text, max_tokens=cap)
        return dataclasses.replace(r, max_tokens=cap)

    assert await cache.store(capped(ASKED, 256), "team:a", "chat", CFG, long, now=0.0)
    assert await lookup(cache, capped(PARAPHRASE, 70), "team:a", "chat", CFG, now=1.0) is None
    hit = await lookup(cache, capped(PARAPHRASE, 250), "team:a", "chat", CFG, now=1.0)
    assert hit is not None and hit.entry.usage.output_tokens == 200
