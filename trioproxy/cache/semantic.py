"""The semantic cache: embedder + vector index + near-miss guard + entry store.

``lookup`` answers a shareable request from the nearest cached prompt of the same
namespace (:func:`~trioproxy.cache.keys.semantic_namespace`) when its cosine similarity is
at or above the route's threshold *and* :func:`~trioproxy.cache.guard.near_miss` finds no
answer-changing difference. Entries (``CacheEntry`` bytes) live in an
:class:`~trioproxy.cache.exact.ExactCache` under ``<namespace>:<entry id>``, so the same
Redis or in-process store serves both caches; the index holds vectors and prompt text.

Time (``now``) is wall-clock seconds, the same clock for every process sharing a store.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from trioproxy.cache.embedder import Embedder
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import ExactCache
from trioproxy.cache.guard import near_miss
from trioproxy.cache.keys import (
    is_shareable,
    semantic_namespace,
    semantic_scope_prefix,
    semantic_text,
)
from trioproxy.cache.vector_index import VectorIndex
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest

MAX_PROMPT_CHARS = 2_000
"""Longer final turns skip the semantic cache: the embedder reads only 256 word pieces."""


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry: CacheEntry
    similarity: float
    namespace: str
    entry_id: str
    cached_prompt: str


@dataclass(slots=True)
class SemanticStats:
    lookups: int = 0
    hits: int = 0
    below_threshold: int = 0
    empty: int = 0
    embed_skipped: int = 0
    stale: int = 0
    stored: int = 0
    guard_rejects: Counter[str] = field(default_factory=Counter)


class SemanticCache:
    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        entries: ExactCache,
        *,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        memo_size: int = 1024,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.entries = entries
        self._max_chars = max_prompt_chars
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_size = memo_size
        self.stats = SemanticStats()

    def applies(self, req: ChatRequest, cfg: CacheConfig) -> bool:
        if cfg.semantic_ttl_s <= 0 or not is_shareable(req, cfg):
            return False
        return len(semantic_text(req)) <= self._max_chars

    async def lookup(
        self, req: ChatRequest, scope: str, route: str, cfg: CacheConfig, *, now: float
    ) -> SemanticHit | None:
        if not self.applies(req, cfg):
            return None
        self.stats.lookups += 1
        text = semantic_text(req)
        vec = await self._embed(text)
        if vec is None:
            self.stats.embed_skipped += 1
            return None
        ns = semantic_namespace(req, scope, route)
        hits = await self.index.search(ns, vec, 1, now=now)
        if not hits:
            self.stats.empty += 1
            return None
        top = hits[0]
        if top.similarity < cfg.semantic_threshold:
            self.stats.below_threshold += 1
            return None
        reason = near_miss(text, top.prompt)
        if reason is not None:
            self.stats.guard_rejects[reason] += 1
            return None
        raw = await self.entries.get(f"{ns}:{top.entry_id}", now=now)
        if raw is None:
            self.stats.stale += 1
            return None
        self.stats.hits += 1
        return SemanticHit(CacheEntry.from_bytes(raw), top.similarity, ns, top.entry_id, top.prompt)

    async def store(
        self,
        req: ChatRequest,
        scope: str,
        route: str,
        cfg: CacheConfig,
        entry: CacheEntry,
        *,
        now: float,
        ttl_s: float | None = None,
    ) -> bool:
        """Index the request's prompt and store ``entry``; False when it does not apply."""
        ttl = cfg.semantic_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0 or not self.applies(req, cfg):
            return False
        text = semantic_text(req)
        vec = await self._embed(text)
        if vec is None:
            self.stats.embed_skipped += 1
            return False
        ns = semantic_namespace(req, scope, route)
        entry_id = hashlib.sha256(text.encode()).hexdigest()[:32]
        await self.entries.put(f"{ns}:{entry_id}", entry.to_bytes(), ttl_s=ttl, now=now)
        await self.index.add(ns, entry_id, vec, text, expires_at=now + ttl, now=now)
        self.stats.stored += 1
        return True

    async def flush_namespace(self, namespace: str) -> int:
        await self.entries.flush_namespace(namespace)
        return await self.index.flush_namespace(namespace)

    async def flush_scope(self, scope: str, route: str) -> int:
        """Drop every semantic entry of a tenant scope and route, whatever its context."""
        prefix = semantic_scope_prefix(scope, route)
        await self.entries.flush_prefix(prefix)
        return await self.index.flush_prefix(prefix)

    async def delete(self, namespace: str, entry_id: str) -> bool:
        await self.entries.delete(f"{namespace}:{entry_id}")
        return await self.index.delete(namespace, entry_id)

    async def _embed(self, text: str) -> np.ndarray | None:
        """Embeds once per recent text: a miss's vector is reused when its answer is stored."""
        vec = self._memo.get(text)
        if vec is not None:
            self._memo.move_to_end(text)
            return vec
        vec = await self.embedder.embed(text)
        if vec is not None:
            self._memo[text] = vec
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return vec


__all__ = ["MAX_PROMPT_CHARS", "SemanticCache", "SemanticHit", "SemanticStats"]
