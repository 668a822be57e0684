"""The semantic cache: embedder + vector index + near-miss guard + pair verifier + records.

``lookup`` answers a shareable request from the nearest cached prompt of the same
namespace (:func:`~trioproxy.cache.keys.semantic_namespace`) when, for the route's band
(:func:`route_band`): its cosine similarity is at or above the floor, the guard
(:func:`~trioproxy.cache.guard.near_miss`, a cheap lexical veto) finds no answer-changing
difference, and, below the ceiling, the pair verifier
(:func:`~trioproxy.cache.verifier.verify`) aligns every content token of each prompt with
the other or, where it does not, the pair cross-encoder
(:func:`~trioproxy.cache.cross_encoder.score`, run in a worker thread) judges the pair the same
question at the band's cut. The cross-encoder alone may also serve a pair a little below the
floor (down to the band's ``reach``) and overrule the guard's protected-term veto when a term
is on one side only and no other rule fires (:func:`~trioproxy.cache.guard.term_only`, where
at the band's stricter ``term_cut``). Records (:class:`~trioproxy.cache.semantic_record.SemanticRecord` bytes: the
entry, the prompt's token vectors, the writer) live in an
:class:`~trioproxy.cache.exact.ExactCache` under ``<namespace>:<entry id>``.

The prompt is embedded once per request: ``lookup`` returns its embedding with the
outcome, and ``store`` takes it back for the answer's record.

With ``confirm_users`` N > 1, an entry is served to keys other than its writer
only once N distinct keys asked for it (poisoning resistance); each unconfirmed match by a
new key is a miss that counts as one confirmation. Near-threshold misses are counted per
key (:class:`~trioproxy.cache.probing.ProbeTracker`).

Time (``now``) is wall-clock seconds, the same clock for every process sharing a store.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import trio

from trioproxy.cache.aliases import embedding_text
from trioproxy.cache.band import Band, band_for
from trioproxy.cache.cross_encoder import needed, score, without_model
from trioproxy.cache.embedder import Embedder, Embedding
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import ExactCache
from trioproxy.cache.guard import near_miss, term_only
from trioproxy.cache.keys import (
    is_shareable,
    semantic_namespace,
    semantic_scope_prefix,
    semantic_text,
)
from trioproxy.cache.probing import PROBE_MARGIN, ProbeTracker
from trioproxy.cache.semantic_record import (
    SemanticRecord,
    confirmed,
    confirmers_from_bytes,
    confirmers_to_bytes,
)
from trioproxy.cache.vector_index import VectorIndex
from trioproxy.cache.vocabulary import Vocabulary
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest
from trioproxy.telemetry.log_every import LogEvery

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2_000
"""Longer final turns skip the semantic cache: the embedder reads only 256 word pieces."""


def route_band(cfg: CacheConfig) -> Band:
    """The route's band: its target's preset, with an explicit band or floor on top."""
    band = band_for(cfg.semantic_target_false_hit)
    if cfg.semantic_band is None and cfg.semantic_threshold is None:
        return band
    floor, ceiling = cfg.semantic_band or (band.floor, band.ceiling)
    if cfg.semantic_threshold is not None:
        floor = cfg.semantic_threshold
    # an explicit floor is a floor: nothing is served below it
    return Band(floor, max(floor, ceiling), band.align, band.cut, None, band.term_cut)


MODEL_THREADS = 2
"""Cross-encoder runs at once per cache (each ~10-20 ms of one core): a burst of band hits
(a prober's near-threshold misses among them) queues for these instead of taking all of
Trio's 40 default worker threads and both cores from the requests the cache serves."""


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry: CacheEntry
    similarity: float
    namespace: str
    entry_id: str
    cached_prompt: str


@dataclass(frozen=True, slots=True)
class SemanticLookup:
    """A lookup's outcome and the prompt's embedding (None when skipped), for ``store``."""

    hit: SemanticHit | None
    embedding: Embedding | None = None


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
    verifier_rejects: int = 0
    unconfirmed: int = 0
    """Matches held back until enough distinct keys confirm them."""
    model_failures: int = 0
    """Band hits the cross-encoder could not judge (it failed to load or run): misses."""


class SemanticCache:
    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        entries: ExactCache,
        *,
        vocabulary: Vocabulary | None = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.entries = entries
        self._vocab = vocabulary
        self._max_chars = max_prompt_chars
        self.stats = SemanticStats()
        self.probes = ProbeTracker()
        self._model_runs = trio.CapacityLimiter(MODEL_THREADS)
        self._model_errors = LogEvery()

    def applies(self, req: ChatRequest, cfg: CacheConfig) -> bool:
        if cfg.semantic_ttl_s <= 0 or not is_shareable(req, cfg):
            return False
        return len(semantic_text(req)) <= self._max_chars

    async def lookup(
        self,
        req: ChatRequest,
        scope: str,
        route: str,
        cfg: CacheConfig,
        *,
        now: float,
        asker: str = "",
    ) -> SemanticLookup:
        """``asker``: :func:`~trioproxy.cache.semantic_record.asker_digest` of the API key."""
        if not self.applies(req, cfg):
            return SemanticLookup(None)
        self.stats.lookups += 1
        text = semantic_text(req)
        emb = await self.embedder.embed(embedding_text(text))
        if emb is None:
            self.stats.embed_skipped += 1
            return SemanticLookup(None)
        hit = await self._match(req, text, emb, scope, route, cfg, now, asker)
        return SemanticLookup(hit, emb)

    async def _match(
        self,
        req: ChatRequest,
        text: str,
        emb: Embedding,
        scope: str,
        route: str,
        cfg: CacheConfig,
        now: float,
        asker: str,
    ) -> SemanticHit | None:
        ns = semantic_namespace(req, scope, route, self.embedder.space)
        hits = await self.index.search(ns, emb.vec, 1, now=now)
        if not hits:
            self.stats.empty += 1
            return None
        top = hits[0]
        band = route_band(cfg)
        if top.similarity < band.lowest:
            self.stats.below_threshold += 1
            if top.similarity >= band.lowest - PROBE_MARGIN:
                self._near_miss(asker, now)
            return None
        reason = near_miss(text, top.prompt)
        term_veto = (
            reason == "term"
            and band.term_overrule
            and top.similarity >= band.floor
            and term_only(text, top.prompt)
        )
        if reason is not None and not term_veto:
            self.stats.guard_rejects[reason] += 1
            self._near_miss(asker, now)
            return None
        key = f"{ns}:{top.entry_id}"
        raw = await self.entries.get(key, now=now)
        record = _record(raw)
        if record is None:
            self.stats.stale += 1
            return None
        cap = req.max_tokens
        if cap is not None and record.entry.usage.output_tokens > cap:
            # longer than this caller allows (one max_tokens bucket spans 65-256): a miss
            self.stats.stale += 1
            return None
        if (
            text != top.prompt
            and (top.similarity < band.ceiling or term_veto or top.similarity < band.floor)
            and not await self._aligned(
                text, top.prompt, emb, record, top.similarity, band, term_veto
            )
        ):
            if term_veto:
                self.stats.guard_rejects["term"] += 1
            else:
                self.stats.verifier_rejects += 1
            self._near_miss(asker, now)
            return None
        if not await self._confirmed(key, record, asker, cfg, now):
            self.stats.unconfirmed += 1
            return None
        self.stats.hits += 1
        return SemanticHit(record.entry, top.similarity, ns, top.entry_id, top.prompt)

    async def _aligned(
        self,
        text: str,
        cached_text: str,
        emb: Embedding,
        record: SemanticRecord,
        similarity: float,
        band: Band,
        term_veto: bool,
    ) -> bool:
        """The verifier's verdict (alignment, else the cross-encoder, in a worker thread: a
        model run takes milliseconds); without token vectors (a remote embedder) or a model
        vocabulary a band hit cannot be verified and is refused."""
        if self._vocab is None or emb.tokens is None or record.tokens is None:
            return False
        verdict = without_model(
            emb.tokens, record.tokens, similarity, self._vocab, band, term_veto=term_veto
        )
        if verdict is not None:
            return verdict
        try:
            decided = await trio.to_thread.run_sync(
                score, text, cached_text, limiter=self._model_runs
            )
        except Exception as exc:  # a model that cannot load or run (a broken install): a miss
            self.stats.model_failures += 1
            if (skipped := self._model_errors.due()) is not None:
                log.error("semantic cache: the pair cross-encoder failed (%r); band hits are "
                          "misses meanwhile (%d more since the last line)", exc, skipped)  # fmt: skip
            return False
        return decided >= needed(band, term_veto=term_veto)

    async def _confirmed(
        self, key: str, record: SemanticRecord, asker: str, cfg: CacheConfig, now: float
    ) -> bool:
        needed = cfg.confirm_users
        if confirmed(record, frozenset(), asker, needed):
            return True
        ckey = key + ":c"
        confirmers = confirmers_from_bytes(await self.entries.get(ckey, now=now))
        if confirmed(record, confirmers, asker, needed):
            return True
        if asker and asker not in confirmers:
            grown = confirmers | {asker}
            ttl = max(record.entry.created_at + cfg.semantic_ttl_s - now, 1.0)
            await self.entries.put(ckey, confirmers_to_bytes(grown), ttl_s=ttl, now=now)
        return False

    def _near_miss(self, asker: str, now: float) -> None:
        if self.probes.observe(asker or "anonymous", now):
            log.warning("semantic cache: key %s flagged for collision probing", asker)

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
        embedding: Embedding | None = None,
        writer: str = "",
    ) -> bool:
        """Index the request's prompt and store ``entry``; False when it does not apply.
        ``embedding``: the one its lookup computed (embedded here only when absent)."""
        ttl = cfg.semantic_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0 or not self.applies(req, cfg):
            return False
        text = semantic_text(req)
        emb = (
            embedding if embedding is not None else await self.embedder.embed(embedding_text(text))
        )
        if emb is None:
            self.stats.embed_skipped += 1
            return False
        ns = semantic_namespace(req, scope, route, self.embedder.space)
        entry_id = hashlib.sha256(text.encode()).hexdigest()[:32]
        key = f"{ns}:{entry_id}"
        if cfg.confirm_users > 1:
            # another key's record of the same text keeps its writer and confirmations
            held = _record(await self.entries.get(key, now=now))
            if held is not None and held.writer != writer:
                return False
        record = SemanticRecord(entry, emb.tokens, writer)
        await self.entries.put(key, record.to_bytes(), ttl_s=ttl, now=now)
        await self.index.add(ns, entry_id, emb.vec, text, expires_at=now + ttl, now=now)
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
        await self.entries.delete(f"{namespace}:{entry_id}:c")
        return await self.index.delete(namespace, entry_id)


def _record(raw: bytes | None) -> SemanticRecord | None:
    if raw is None:
        return None
    try:
        return SemanticRecord.from_bytes(raw)
    except (ValueError, UnicodeDecodeError):
        return None


__all__ = [
    "MAX_PROMPT_CHARS",
    "SemanticCache",
    "SemanticHit",
    "SemanticLookup",
    "SemanticStats",
    "route_band",
]
