"""The cache write path, off the response's hot path.

The gateway calls :meth:`CacheWriter.submit` after a successful, complete answer; it never
blocks: when the bounded channel is full the write is skipped and counted. :meth:`run`
(started with ``nursery.start`` in the app nursery) drains the channel. A failing write
(Redis down, PostgreSQL error) is counted and dropped; it never reaches the request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import ExactCache
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest

if TYPE_CHECKING:  # numpy (~13.5 MB of RSS) only once a semantic cache is built
    from trioproxy.cache.embedder import Embedding
    from trioproxy.cache.semantic import SemanticCache

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
    embedding: Embedding | None = None
    """The prompt's embedding from its lookup (else the writer embeds it)."""
    writer: str = ""
    """Digest of the key whose answer this is (poisoning resistance)."""


@dataclass(frozen=True, slots=True)
class ExactWrite:
    """An exact-cache entry that is not a chat answer (an embeddings body): its bytes."""

    key: str
    value: bytes
    ttl_s: float
    now: float
    route: str


@dataclass(frozen=True, slots=True)
class ExactDelete:
    """An exact-cache entry to drop (one a lookup found unreadable): queued with the puts,
    so a later answer's put for the same key lands after it."""

    key: str
    route: str


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    dropped_full: int = 0
    written: int = 0
    failed: int = 0
    queued: int = 0


class CacheWriter:
    """Two bounded queues drained by two tasks: an exact write (one put) never waits
    behind a semantic write (an embedding when the lookup had none, ~4 ms of CPU). A job goes to each queue it
    applies to; a full queue skips that write and counts it."""

    def __init__(
        self,
        *,
        exact: ExactCache | None,
        semantic: SemanticCache | None,
        capacity: int = 256,
    ) -> None:
        self._exact = exact
        self._semantic = semantic
        self._exact_q = trio.open_memory_channel[_Job](capacity)
        self._semantic_q = trio.open_memory_channel[_Job](capacity)
        self._stats = WriterStats()

    def statistics(self) -> WriterStats:
        s = self._stats
        queued = sum(
            q[0].statistics().current_buffer_used for q in (self._exact_q, self._semantic_q)
        )
        return WriterStats(s.submitted, s.dropped_full, s.written, s.failed, queued)

    def submit(self, job: WriteJob) -> bool:
        """Queue the job's writes; False when any was skipped (queue full), counted."""
        queues = []
        if self._exact is not None and job.exact_key is not None and job.exact_ttl_s > 0:
            queues.append(self._exact_q[0])
        if self._semantic is not None and job.semantic_ttl_s > 0:
            queues.append(self._semantic_q[0])
        ok = True
        for send in queues:
            ok = self._queue(send, job) and ok
        return ok

    def submit_exact(self, write: ExactWrite | ExactDelete) -> bool:
        """Queue one exact-cache put or delete; False when skipped (queue full), counted."""
        if self._exact is None or (isinstance(write, ExactWrite) and write.ttl_s <= 0):
            return False
        return self._queue(self._exact_q[0], write)

    def _queue(self, send: trio.MemorySendChannel[_Job], job: _Job) -> bool:
        try:
            send.send_nowait(job)
        except trio.WouldBlock:
            self._stats.dropped_full += 1
            return False
        self._stats.submitted += 1
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain, self._exact_q[1], self._write_exact)
            nursery.start_soon(self._drain, self._semantic_q[1], self._write_semantic)
            task_status.started()

    async def _drain(
        self, receive: trio.MemoryReceiveChannel[_Job], write: Callable[[_Job], Awaitable[None]]
    ) -> None:
        async for job in receive:
            try:
                await write(job)
            except Exception:
                self._stats.failed += 1
                log.exception("cache write failed (route %s)", job.route)
            else:
                self._stats.written += 1

    async def _write_exact(self, job: _Job) -> None:
        assert self._exact is not None
        if isinstance(job, ExactDelete):
            await self._exact.delete(job.key)
            return
        if isinstance(job, ExactWrite):
            await self._exact.put(job.key, job.value, ttl_s=job.ttl_s, now=job.now)
            return
        assert job.exact_key is not None
        await self._exact.put(
            job.exact_key, job.entry.to_bytes(), ttl_s=job.exact_ttl_s, now=job.now
        )

    async def _write_semantic(self, job: _Job) -> None:
        assert self._semantic is not None and isinstance(job, WriteJob)
        await self._semantic.store(
            job.req, job.scope, job.route, job.cfg, job.entry, now=job.now,
            ttl_s=job.semantic_ttl_s, embedding=job.embedding, writer=job.writer,
        )  # fmt: skip


_Job = WriteJob | ExactWrite | ExactDelete

__all__ = ["CacheWriter", "ExactDelete", "ExactWrite", "WriteJob", "WriterStats"]
