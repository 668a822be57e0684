"""What /metrics samples from a worker's parts: the cache file's failed calls are counted
whichever store the answers are in (the file may hold the vectors alone, with Redis)."""

from __future__ import annotations

from pathlib import Path

from trioproxy.cache.cache_file import CacheFile
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.writer import CacheWriter
from trioproxy.edge.part_stats import sample_parts
from trioproxy.ledger.sinks import ListSink
from trioproxy.pipeline.caching import ResponseCache


def test_the_cache_files_errors_are_counted_when_the_answers_are_elsewhere(
    tmp_path: Path,
) -> None:
    exact = MemoryExactCache()  # stands for Redis: the file holds the vectors only
    file = CacheFile(tmp_path / "cache.sqlite3")
    for _ in range(3):
        file.failed(OSError("disk"))
    cache = ResponseCache(exact, None, CacheWriter(exact=exact, semantic=None), file=file)
    assert sample_parts(cache, ListSink(), None).counts["cache_store_errors"] == 3
    no_file = ResponseCache(exact, None, CacheWriter(exact=exact, semantic=None))
    assert "cache_store_errors" not in sample_parts(no_file, ListSink(), None).counts
