"""Response caching on the request path: decide, look up, store (chat and embeddings).

Keys, namespaces, the near-miss guard and the stores live in
:mod:`trioproxy.cache`; this module maps a request onto them. A lookup runs
before budget admission (a hit costs nothing upstream and reserves nothing);
a miss is stored after a complete, successful answer, off the hot path
through the bounded :class:`~trioproxy.cache.writer.CacheWriter` (full: the
answer is simply not cached). A hit is replayed by the edge
(:mod:`trioproxy.core.answer` turns it into stream events when asked for a stream).

Per request, ``x-trioproxy-cache: off`` or a body field ``cache_ttl: 0``
bypasses the cache; ``cache_ttl: N`` shortens the route's TTLs for the
answer being stored (never lengthens them: :func:`stored_ttls`). The field is removed before the request goes upstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
import trio

from trioproxy.cache.entry import CacheEntry, storable
from trioproxy.cache.exact import ExactCache
from trioproxy.cache.keys import (
    embedding_key,
    exact_key,
    exact_namespace,
    holds_one_answer,
    tenant_scope,
)
from trioproxy.cache.semantic_record import asker_digest
from trioproxy.cache.writer import CacheWriter, ExactDelete, ExactWrite, WriteJob
from trioproxy.config.model import CacheConfig, RouteConfig
from trioproxy.core.types import (
    ChatRequest,
    Completion,
)
from trioproxy.errors import invalid, postgres_errors
from trioproxy.ledger.record import CacheStatus
from trioproxy.providers.openai_embeddings import EmbeddingResult
from trioproxy.store.resp import RedisError

if TYPE_CHECKING:  # numpy (~13.5 MB of RSS) only once a semantic cache is built
    from trioproxy.cache.cache_file import CacheFile
    from trioproxy.cache.embedder import Embedding
    from trioproxy.cache.semantic import SemanticCache

LOOKUP_TIMEOUT_S = 0.5
"""Longest a cache lookup may delay a request before it counts as a miss."""
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CachePlan:
    scope: str
    route: str
    cfg: CacheConfig
    key: str | None
    """Exact-cache key, or None when the exact cache is off for the route."""
    ttl_override: int | None
    asker: str = ""
    """Digest of the API key's name: who wrote an entry, who confirms one."""
    embedding: Embedding | None = None
    """The prompt's embedding from the semantic lookup, reused when its answer is stored."""


@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: CacheEntry
    kind: Literal["exact", "semantic"]
    entry_ref: str
    """Names the stored entry, for :meth:`ResponseCache.delete` (a reported bad hit)."""
    similarity: float | None = None


def stored_ttls(cfg: CacheConfig, override: int | None) -> tuple[float, float]:
    """The exact and semantic TTLs an answer is stored with: the route's, or the caller's
    ``cache_ttl`` when shorter. A caller never keeps an answer longer than the route allows
    (it is served to the rest of its team, or everyone on a global route, that long: a
    ``cache_ttl`` of a billion seconds kept one for 31 years)."""
    if override is None:
        return cfg.exact_ttl_s, cfg.semantic_ttl_s
    return min(override, cfg.exact_ttl_s), min(override, cfg.semantic_ttl_s)


def take_cache_ttl(req: ChatRequest) -> tuple[ChatRequest, int | None]:
    """Remove the ``cache_ttl`` body extension (providers would reject it)."""
    if "cache_ttl" not in req.body:
        return req, None
    ttl = req.body["cache_ttl"]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
        raise invalid("cache_ttl must be a non-negative integer (seconds).", param="cache_ttl")
    body = {k: v for k, v in req.body.items() if k != "cache_ttl"}
    chat = {k: v for k, v in req.chat.items() if k != "cache_ttl"}
    return replace(req, body=body, chat=chat), ttl


class ResponseCache:
    def __init__(
        self,
        exact: ExactCache,
        semantic: SemanticCache | None,
        writer: CacheWriter,
        *,
        file: CacheFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.exact = exact
        self.semantic = semantic
        self.writer = writer
        self.file = file
        """``state_dir``'s cache file when it holds the answers or the vectors (its failed
        calls are a metric)."""
        self.clock = clock
        self.lookup_errors = 0

    def plan(
        self,
        req: ChatRequest,
        team: str,
        route: RouteConfig,
        *,
        bypass: bool,
        ttl_override: int | None,
        key_name: str = "",
    ) -> tuple[CachePlan | None, CacheStatus]:
        cfg = route.cache
        if cfg.exact_ttl_s <= 0 and cfg.semantic_ttl_s <= 0:
            return None, "off"
        if bypass or ttl_override == 0:
            return None, "bypass"
        if not holds_one_answer(req):
            return None, "off"
        scope = tenant_scope(team, cfg)
        asker = asker_digest(key_name) if key_name else ""
        # with confirmation on, an exact entry is its writer's alone: other keys are
        # served only through the semantic entry, once confirmed
        owner = asker if cfg.confirm_users > 1 else ""
        key = exact_key(req, scope, route.name, owner) if cfg.exact_ttl_s > 0 else None
        return CachePlan(scope, route.name, cfg, key, ttl_override, asker), "miss"

    async def lookup(self, plan: CachePlan, req: ChatRequest) -> tuple[CacheHit | None, CachePlan]:
        """A hit or None, and the plan to store the answer with (it carries the prompt's
        embedding, so a miss is embedded once). A cache that is down or slow is a miss,
        never an error: the request goes upstream (within ``LOOKUP_TIMEOUT_S``)."""
        found: list[Embedding] = []
        hit = await self._bounded(lambda: self._lookup(plan, req, found))
        return hit, _with_embedding(plan, found)

    async def _bounded(self, lookup: Callable[[], Awaitable[T | None]]) -> T | None:
        """``lookup()``, or None when the cache fails or takes over ``LOOKUP_TIMEOUT_S``."""
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            try:
                return await lookup()
            except store_errors() as exc:
                self.lookup_errors += 1
                log.warning("cache lookup failed, treated as a miss: %r", exc)
                return None
        self.lookup_errors += 1
        return None

    def plan_embedding(
        self, body: Mapping[str, Any], team: str, route: RouteConfig, *, bypass: bool,
        chain: str = "",
    ) -> tuple[CachePlan | None, CacheStatus]:  # fmt: skip
        """The exact-cache plan of an embeddings request (no semantic cache for vectors)."""
        cfg = route.cache
        if cfg.exact_ttl_s <= 0:
            return None, "off"
        if bypass:
            return None, "bypass"
        scope = tenant_scope(team, cfg)
        key = embedding_key(body, scope, route.name, chain)
        return CachePlan(scope, route.name, cfg, key, None), "miss"

    async def lookup_embedding(self, plan: CachePlan) -> EmbeddingResult | None:
        """A stored embeddings answer, or None (down, slow or garbage: a miss)."""
        key = plan.key
        assert key is not None
        raw = await self._bounded(lambda: self.exact.get(key, now=self.clock()))
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
            return EmbeddingResult(entry["body"], int(entry["input_tokens"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def store_embedding(self, plan: CachePlan, result: EmbeddingResult, body: bytes) -> bool:
        """Queue an embeddings answer for the exact cache (``body``: ``result.body`` as the
        caller got it, not serialised again); False when skipped."""
        assert plan.key is not None
        value = b'{"body":%b,"input_tokens":%d}' % (body, result.input_tokens)
        write = ExactWrite(plan.key, value, plan.cfg.exact_ttl_s, self.clock(), plan.route)
        return self.writer.submit_exact(write)

    async def _lookup(
        self, plan: CachePlan, req: ChatRequest, found: list[Embedding]
    ) -> CacheHit | None:
        now = self.clock()
        if plan.key is not None:
            raw = await self.exact.get(plan.key, now=now)
            if raw is not None:
                try:
                    return CacheHit(CacheEntry.from_bytes(raw), "exact", plan.key)
                except ValueError:  # unreadable (another version's, damaged): a miss, and
                    # dropped behind the request, before the put its answer may queue
                    self.writer.submit_exact(ExactDelete(plan.key, plan.route))
        if self.semantic is not None:
            out = await self.semantic.lookup(
                req, plan.scope, plan.route, plan.cfg, now=now, asker=plan.asker
            )
            if out.embedding is not None:
                found.append(out.embedding)
            hit = out.hit
            if hit is not None:
                ref = f"{hit.namespace}:{hit.entry_id}"
                return CacheHit(hit.entry, "semantic", ref, hit.similarity)
        return None

    async def flush(self, team: str, route: RouteConfig) -> tuple[str, int, int | None]:
        """Drop the answers cached for ``team`` (its tenant scope: the team's, or ``global``)
        on ``route``: (scope, exact entries removed, semantic entries removed or None)."""
        scope = tenant_scope(team, route.cache)
        exact = await self.exact.flush_namespace(team_namespace(team, route))
        semantic = None
        if self.semantic is not None:
            semantic = await self.semantic.flush_scope(scope, route.name)
        return scope, exact, semantic

    async def delete(self, entry_ref: str) -> bool:
        """Drop one entry named by a hit's ``x-trioproxy-cache-entry`` header."""
        namespace, _, entry_id = entry_ref.partition(":")
        if not entry_id:
            return False
        if entry_ref.startswith("s") and self.semantic is not None:
            return await self.semantic.delete(namespace, entry_id)
        return await self.exact.delete(entry_ref)

    def store(
        self, plan: CachePlan, req: ChatRequest, completion: Completion, cost_micros: int
    ) -> bool:
        """Queue a complete answer for both caches; False when skipped."""
        if not storable(completion):
            return False
        now = self.clock()
        exact_ttl, semantic_ttl = stored_ttls(plan.cfg, plan.ttl_override)
        job = WriteJob(
            req=req,
            scope=plan.scope,
            route=plan.route,
            cfg=plan.cfg,
            entry=CacheEntry.from_completion(completion, cost_micros=cost_micros, now=now),
            now=now,
            exact_key=plan.key,
            exact_ttl_s=exact_ttl if plan.key else 0.0,
            semantic_ttl_s=semantic_ttl if self.semantic is not None else 0.0,
            embedding=plan.embedding,
            writer=plan.asker,
        )
        return self.writer.submit(job)


def team_namespace(team: str, route: RouteConfig) -> str:
    """The exact-cache namespace of ``team``'s answers on ``route`` (its tenant scope: the
    team's, or ``global``); an exact entry's reference starts with it."""
    return exact_namespace(tenant_scope(team, route.cache), route.name)


def _with_embedding(plan: CachePlan, found: list[Embedding]) -> CachePlan:
    return replace(plan, embedding=found[0]) if found else plan


def store_errors() -> tuple[type[BaseException], ...]:
    """What a cache store that is down raises (Redis, sockets, pgvector once loaded)."""
    return (RedisError, OSError, *postgres_errors())


__all__ = [
    "CacheHit",
    "CachePlan",
    "ResponseCache",
    "store_errors",
    "stored_ttls",
    "take_cache_ttl",
    "team_namespace",
]
