"""The response cache's size bounds are ``[storage]`` keys, and the wiring hands them on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trioproxy.cache.exact_sqlite import SqliteExactCache
from trioproxy.cache.vector_pg import MAX_TOTAL, PgVectorIndex
from trioproxy.cache.vector_shared import MAX_ROWS, SharedHnswIndex
from trioproxy.config import validate_settings
from trioproxy.config.demo import demo_settings
from trioproxy.config.model import Settings
from trioproxy.config.secret import Secret
from trioproxy.edge.services import NamedService
from trioproxy.server.cache_service import response_cache


def _with_storage(tmp_path: Path, **storage: object) -> Settings:
    s = demo_settings("http://127.0.0.1:1", "k", state_dir=str(tmp_path))  # a semantic route
    return dataclasses.replace(s, storage=dataclasses.replace(s.storage, **storage))


def test_the_embedded_cache_keeps_the_configured_bounds(tmp_path: Path) -> None:
    settings = _with_storage(tmp_path, cache_max_entries=500, cache_max_mb=3,
                             semantic_max_prompts=700, semantic_max_per_namespace=40)  # fmt: skip
    assert validate_settings(settings) == []
    cache = response_cache(settings, [], None)
    assert cache is not None and isinstance(cache.exact, SqliteExactCache)
    assert cache.exact.bounds == (500, 3 * 1024 * 1024)  # what the Cache page shows
    assert cache.semantic is not None
    index = cache.semantic.index
    assert isinstance(index, SharedHnswIndex)
    assert index.rows.max_rows == 700  # the file's rows
    core = index.index.core  # each worker's in-memory index
    assert (core.max_total, core.max_per_namespace) == (700, 40)


def test_unset_bounds_are_the_documented_defaults(tmp_path: Path) -> None:
    cache = response_cache(_with_storage(tmp_path), [], None)
    assert cache is not None and isinstance(cache.exact, SqliteExactCache)
    assert cache.exact.bounds == (100_000, 256 * 1024 * 1024)
    assert cache.semantic is not None and isinstance(cache.semantic.index, SharedHnswIndex)
    assert cache.semantic.index.rows.max_rows == MAX_ROWS == 100_000
    assert cache.semantic.index.index.core.max_total == 100_000


def test_pgvector_takes_the_bounds_and_keeps_its_own_default(tmp_path: Path) -> None:
    url = Secret("postgresql://127.0.0.1:1/none")  # never connected: the pool opens in a service
    for most, want in ((None, MAX_TOTAL), (2_000, 2_000)):
        services: list[NamedService] = []
        settings = _with_storage(tmp_path, database_url=url, semantic_max_prompts=most,
                                 semantic_max_per_namespace=30)  # fmt: skip
        cache = response_cache(settings, services, None)
        assert cache is not None and cache.semantic is not None
        index = cache.semantic.index
        assert isinstance(index, PgVectorIndex)
        assert (index.max_total, index.max_per_namespace) == (want, 30)


def test_a_bound_below_one_is_a_config_error(tmp_path: Path) -> None:
    for key in ("cache_max_entries", "cache_max_mb", "semantic_max_prompts",
                "semantic_max_per_namespace"):  # fmt: skip
        problems = validate_settings(_with_storage(tmp_path, **{key: 0}))
        assert problems == [f"storage.{key}: must be >= 1"], problems
