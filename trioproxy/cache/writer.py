"""The cache write path, off the response's hot path.

The gateway calls :meth:`CacheWriter.submit` after a successful, complete answer; it never
blocks: when the bounded channel is full the write is skipped and counted. :meth:`run`
(started with ``nursery.start`` in the app nursery) drains the channel. A failing write
(Redis down, PostgreSQL error) is counted and dropped; it never reaches the request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import ExactCache
from trioproxy.cache.semantic import SemanticCache
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriteJob:
    req: ChatRequest
    scope: str
    route: str
    cfg: CacheConfig
    entry: CacheEntry
    now: float
    exact_key: str | None = None
    exact_ttl_s: float = 0.0
    semantic_ttl_s: float = 0.0


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    dropped_full: int = 0
    written: int = 0
    failed: int = 0
    queued: int = 0


class CacheWriter:
    def __init__(
        self,
        *,
        exact: ExactCache | None,
        semantic: SemanticCache | None,
        capacity: int = 256,
    ) -> None:
        self._exact = exact
        self._semantic = semantic
        self._send, self._receive = trio.open_memory_channel[WriteJob](capacity)
        self._stats = WriterStats()

    def statistics(self) -> WriterStats:
        s = self._stats
        queued = self._send.statistics().current_buffer_used
        return WriterStats(s.submitted, s.dropped_full, s.written, s.failed, queued)

    def submit(self, job: WriteJob) -> bool:
        """Queue a write; False (and counted) when the queue is full."""
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            self._stats.dropped_full += 1
            return False
        self._stats.submitted += 1
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for job in self._receive:
            try:
                await self._write(job)
            except Exception:
                self._stats.failed += 1
                log.exception("cache write failed (route %s)", job.route)
            else:
                self._stats.written += 1

    async def _write(self, job: WriteJob) -> None:
        if self._exact is not None and job.exact_key is not None and job.exact_ttl_s > 0:
            await self._exact.put(
                job.exact_key, job.entry.to_bytes(), ttl_s=job.exact_ttl_s, now=job.now
            )
        if self._semantic is not None and job.semantic_ttl_s > 0:
            await self._semantic.store(
                job.req,
                job.scope,
                job.route,
                job.cfg,
                job.entry,
                now=job.now,
                ttl_s=job.semantic_ttl_s,
            )


__all__ = ["CacheWriter", "WriteJob", "WriterStats"]
