"""Build the response cache for a config, with its lifetime services.

Exact entries (and the semantic cache's records) go to Redis when ``storage.redis_url`` is
set (shared by every instance), else to ``state_dir/cache.sqlite3`` (shared by the host's
worker processes, kept across restarts; one worker too). The semantic cache (only when a
route turns it on) uses the local ONNX MiniLM embedder and pgvector when
``storage.database_url`` is set, else a per-worker hnswlib index built from and kept in step
with the vectors in that same SQLite file (:mod:`trioproxy.cache.vector_shared`). The
semantic cache's modules (numpy, the embedder, the vector index: ~13.5 MB of RSS) are
imported only when a route turns it on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from trioproxy.cache.cache_file import FILE_NAME, CacheFile
from trioproxy.cache.exact import ExactCache, RedisExactCache
from trioproxy.cache.exact_sqlite import SqliteEntries, SqliteExactCache
from trioproxy.cache.writer import CacheWriter
from trioproxy.config.model import Settings
from trioproxy.core.backoff import Backoff, BackoffPolicy
from trioproxy.edge.services import NamedService, Service
from trioproxy.errors import postgres_errors
from trioproxy.pipeline.caching import ResponseCache

if TYPE_CHECKING:  # psycopg is imported only when pgvector is used (~10 MB of RSS)
    from trioproxy.cache.embedder import Embedder
    from trioproxy.cache.semantic import SemanticCache
    from trioproxy.cache.vector_pg import PgVectorIndex
    from trioproxy.store.redis_client import RedisClient

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 10.0
PG_RETRY = BackoffPolicy(0.5, 30.0)
"""Between attempts to open the pgvector index while PostgreSQL is down."""


def _pg_service(index: PgVectorIndex) -> Service:
    """Opens the pgvector index, retrying with backoff while PostgreSQL is down (the
    gateway starts anyway; semantic lookups are misses until the index is open)."""

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = Backoff(PG_RETRY)
        try:
            while True:
                try:
                    await index.open()
                    if backoff.failures:
                        log.warning(
                            "pgvector index is back (open after %d tries)", backoff.failures
                        )
                    break
                except postgres_errors() as exc:
                    delay = backoff.next()
                    log.warning("pgvector index unavailable (%r); retrying in %.1f s", exc, delay)
                    await trio.sleep(delay)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await index.aclose()

    return run


def _embedder(settings: Settings, services: list[NamedService]) -> Embedder:
    from trioproxy.cache.embedder import LocalEmbedder, OpenAIEmbedder

    cfg = settings.embedder
    if cfg.kind == "openai":
        import httpx

        client = httpx.AsyncClient(timeout=None, trust_env=False)
        key = cfg.api_key.reveal() if cfg.api_key is not None else None
        remote = OpenAIEmbedder(client, base_url=cfg.base_url, model=cfg.model, dim=cfg.dim,
                                api_key=key)  # fmt: skip
        services.append(NamedService("embedder", remote.run, required=False))  # closes client
        return remote
    # its session lives with its service, which builds the model file the first time
    models = Path(settings.storage.state_dir) / "models"
    local = LocalEmbedder(model_path=cfg.model_path, cache_dir=models)
    services.append(NamedService("embedder", local.run, required=False))
    return local


def response_cache(
    settings: Settings, services: list[NamedService], redis: RedisClient | None
) -> ResponseCache | None:
    routes = settings.routes.values()
    if not any(r.cache.exact_ttl_s > 0 or r.cache.semantic_ttl_s > 0 for r in routes):
        return None
    semantic_on = any(r.cache.semantic_ttl_s > 0 for r in routes)
    file = None  # state_dir's cache file: answers without Redis, vectors without PostgreSQL
    if redis is None or (semantic_on and settings.storage.database_url is None):
        file = CacheFile(Path(settings.storage.state_dir) / FILE_NAME)
        services.append(NamedService("cache-file", file.run, required=False))
    exact: ExactCache
    storage = settings.storage
    if redis is not None:
        exact = RedisExactCache(redis)
    else:
        assert file is not None  # opened just above without Redis
        entries = SqliteEntries(max_entries=storage.cache_max_entries,
                                max_bytes=storage.cache_max_mb * 1024 * 1024)  # fmt: skip
        exact = SqliteExactCache(file, entries)
    semantic = _semantic(settings, services, exact, file) if semantic_on else None
    writer = CacheWriter(exact=exact, semantic=semantic)
    services.append(NamedService("cache-writer", writer.run))
    return ResponseCache(exact, semantic, writer, file=file)


def _semantic(
    settings: Settings, services: list[NamedService], exact: ExactCache, file: CacheFile | None
) -> SemanticCache:
    """The semantic cache, its embedder and its vector index (with their services). The
    embedded index lives in ``file`` (with Redis and no PostgreSQL: ``state_dir``'s cache
    file holds the vectors alone, so each worker still finds the others' prompts)."""
    from trioproxy.cache.embedder import LocalEmbedder
    from trioproxy.cache.semantic import SemanticCache
    from trioproxy.cache.vector_index import HnswCore, HnswIndex, VectorIndex

    embedder = _embedder(settings, services)
    index: VectorIndex
    storage = settings.storage
    per_namespace, most = storage.semantic_max_per_namespace, storage.semantic_max_prompts
    db = storage.database_url
    if db is not None:
        from trioproxy.cache.vector_pg import MAX_TOTAL, PgVectorIndex

        pg = PgVectorIndex(db.reveal(), dim=embedder.dim, max_per_namespace=per_namespace,
                           max_total=most or MAX_TOTAL)  # fmt: skip
        services.append(NamedService("vector-index", _pg_service(pg), required=False))
        index = pg
    else:
        from trioproxy.cache.vector_shared import MAX_ROWS, SharedHnswIndex, VectorRows

        assert file is not None  # response_cache opens it whenever PostgreSQL is not set
        most = most or MAX_ROWS
        core = HnswCore(dim=embedder.dim, max_per_namespace=per_namespace, max_total=most)
        rows = VectorRows(dim=embedder.dim, max_rows=most)
        shared = SharedHnswIndex(file, HnswIndex(core), rows)
        services.append(NamedService("vector-index", shared.run, required=False))
        index = shared
    vocab = embedder.model.vocabulary() if isinstance(embedder, LocalEmbedder) else None
    return SemanticCache(embedder, index, exact, vocabulary=vocab)


__all__ = ["response_cache"]
