"""Nearest cached prompt per namespace: the :class:`VectorIndex` Protocol and the embedded
hnswlib implementation (the PostgreSQL + pgvector one is in :mod:`.vector_pg`).

:class:`HnswIndex` keeps one cosine index per namespace, so a search can only ever see its
own namespace: a :class:`~trioproxy.cache.flat_index.FlatIndex` searched exactly while the
namespace is small (most are: one per conversation), hnswlib once it outgrows
:data:`~trioproxy.cache.flat_index.FLAT_MAX` (an hnswlib index costs 2.5 MB empty). It is bounded (``max_per_namespace``, ``max_total``), expires
entries by ``expires_at`` against the caller's ``now``, and evicts the least recently hit
entry first (a search touches its top result). The index is not thread-safe, so every
operation runs in one worker thread at a time (a CapacityLimiter of 1); a top-1 query at
100k entries takes ~0.1 ms. It lives in one process's memory: what makes it survive a
restart and agree across a host's workers is :mod:`.vector_shared` (its rows in
``cache.sqlite3``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import hnswlib  # type: ignore[import-untyped]
import numpy as np
import trio

from trioproxy.cache.flat_index import FLAT_MAX, FlatIndex


class Hit(NamedTuple):
    entry_id: str
    similarity: float
    prompt: str


Item = tuple[str, str, np.ndarray, str, float]
"""What :meth:`HnswIndex.add_many` takes: (namespace, entry id, vector, prompt, expires_at)."""


class VectorIndex(Protocol):
    async def search(
        self, namespace: str, vec: np.ndarray, k: int = 1, *, now: float
    ) -> list[Hit]: ...

    async def add(
        self,
        namespace: str,
        entry_id: str,
        vec: np.ndarray,
        prompt: str,
        *,
        expires_at: float,
        now: float,
    ) -> None: ...

    async def delete(self, namespace: str, entry_id: str) -> bool: ...

    async def flush_namespace(self, namespace: str) -> int: ...

    async def flush_prefix(self, prefix: str) -> int:
        """Drop every namespace starting with ``prefix``; returns entries dropped."""
        ...


@dataclass(slots=True)
class _Item:
    entry_id: str
    prompt: str
    expires_at: float


@dataclass(slots=True)
class _Space:
    index: hnswlib.Index | FlatIndex
    """Searched exactly while small; hnswlib once past :data:`FLAT_MAX` (its fixed cost)."""
    capacity: int
    next_label: int = 0
    items: dict[int, _Item] = field(default_factory=dict)
    by_entry: dict[str, int] = field(default_factory=dict)
    lru: OrderedDict[int, None] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class IndexStats:
    entries: int = 0
    namespaces: int = 0
    evictions: int = 0
    expirations: int = 0


_BATCH_MIN = 16
"""Fewer new entries of a namespace than this are added one by one (a tail read's few rows)."""


class HnswCore:
    """The synchronous, single-threaded index. Pure apart from hnswlib: time is ``now``."""

    def __init__(
        self,
        *,
        dim: int = 384,
        max_per_namespace: int = 10_000,
        max_total: int = 200_000,
        ef_search: int = 40,
        m: int = 16,
        ef_construction: int = 64,
    ) -> None:
        self.dim = dim
        self.max_per_namespace = max_per_namespace
        self.max_total = max_total
        self._ef, self._m, self._efc = ef_search, m, ef_construction
        self._spaces: dict[str, _Space] = {}
        self._lru: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.stats = IndexStats()

    def _new_index(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=capacity, ef_construction=self._efc, M=self._m, allow_replace_deleted=True
        )
        index.set_ef(self._ef)
        return index

    def search(self, namespace: str, vec: np.ndarray, k: int, now: float) -> list[Hit]:
        space = self._spaces.get(namespace)
        while space is not None and space.items:
            want = min(len(space.items), k + 4)
            labels, dists = space.index.knn_query(vec, k=want)
            expired = [int(x) for x in labels[0] if space.items[int(x)].expires_at <= now]
            if expired:
                for label in expired:
                    self._remove(namespace, space, label)
                self.stats.expirations += len(expired)
                space = self._spaces.get(namespace)
                continue
            hits = [
                Hit(space.items[int(lb)].entry_id, 1.0 - float(d), space.items[int(lb)].prompt)
                for lb, d in zip(labels[0][:k], dists[0][:k], strict=True)
            ]
            self._touch(namespace, space, int(labels[0][0]))
            return hits
        return []

    def add(
        self, namespace: str, entry_id: str, vec: np.ndarray, prompt: str, expires_at: float
    ) -> None:
        space = self._space(namespace)
        old = space.by_entry.get(entry_id)
        if old is not None:
            self._remove(namespace, space, old, drop_empty=False)
        while len(space.items) >= self.max_per_namespace:
            self._remove(namespace, space, next(iter(space.lru)), drop_empty=False)
            self.stats.evictions += 1
        self._grow(space, len(space.items) + 1)
        label = space.next_label
        space.next_label += 1
        space.index.add_items(vec.reshape(1, -1), [label], replace_deleted=True)
        self._record(namespace, space, label, entry_id, prompt, expires_at)
        while len(self._lru) > self.max_total:
            ns, victim = next(iter(self._lru))
            self._remove(ns, self._spaces[ns], victim)
            self.stats.evictions += 1

    def add_many(self, items: Sequence[Item]) -> None:
        """Add each of ``items`` as :meth:`add` would, in order. When the batch fits the total
        bound, a namespace's entries it does not hold yet that fit its own bound go to hnswlib
        in one ``add_items`` call (insertions on every core, outside the GIL: a worker's start
        builds its index from the cache file this way); the bookkeeping (and the recency
        order) follows ``items``' order, and anything else is added one by one."""
        runs: dict[str, list[Item]] = {}
        for item in items:
            runs.setdefault(item[0], []).append(item)
        labels: dict[tuple[str, str], int] = {}
        if len(self._lru) + len(items) <= self.max_total:
            for namespace, run in runs.items():
                if len(run) >= _BATCH_MIN:
                    labels.update(self._insert_run(namespace, run))
        for item in items:
            label = labels.get((item[0], item[1]))
            if label is None:
                self.add(*item)
                continue
            namespace, entry_id, _, prompt, expires_at = item
            self._record(namespace, self._spaces[namespace], label, entry_id, prompt, expires_at)

    def _insert_run(self, namespace: str, run: list[Item]) -> dict[tuple[str, str], int]:
        """Put ``run``'s vectors into the namespace's hnswlib index in one call, when they are
        all new to it and fit its bound; their labels (none when they do not)."""
        space = self._spaces.get(namespace)
        held = space.by_entry if space is not None else {}
        ids = {entry_id for _, entry_id, _, _, _ in run}
        if (len(ids) < len(run) or not ids.isdisjoint(held)
                or len(held) + len(run) > self.max_per_namespace):  # fmt: skip
            return {}
        space = self._space(namespace)
        self._grow(space, len(space.items) + len(run))
        first = space.next_label
        space.next_label += len(run)
        vecs = np.stack([v.reshape(-1) for _, _, v, _, _ in run])
        space.index.add_items(vecs, list(range(first, first + len(run))), replace_deleted=True)
        return {(namespace, item[1]): first + i for i, item in enumerate(run)}

    def _space(self, namespace: str) -> _Space:
        """The namespace's index, made (for 4 entries, searched exactly) on first use: most
        namespaces hold a conversation's few prompts."""
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = _Space(FlatIndex(self.dim, 4), 4)
        return space

    def _grow(self, space: _Space, need: int) -> None:
        """Room for ``need`` entries in ``space``'s index (its capacity doubled); past
        :data:`FLAT_MAX`, its vectors move to an hnswlib index, labels kept."""
        if need > space.capacity:
            while space.capacity < need:
                space.capacity *= 2
            if isinstance(space.index, FlatIndex) and space.capacity > FLAT_MAX:
                vecs, labels = space.index.live()
                space.index = self._new_index(space.capacity)
                if len(labels):
                    space.index.add_items(vecs, labels)
            else:
                space.index.resize_index(space.capacity)

    def _record(
        self, namespace: str, space: _Space, label: int, entry_id: str, prompt: str,
        expires_at: float,
    ) -> None:  # fmt: skip
        """The bookkeeping of an entry just put in ``space``'s index at ``label``."""
        space.items[label] = _Item(entry_id, prompt, expires_at)
        space.by_entry[entry_id] = label
        self._touch(namespace, space, label)

    def delete(self, namespace: str, entry_id: str) -> bool:
        space = self._spaces.get(namespace)
        label = space.by_entry.get(entry_id) if space else None
        if space is None or label is None:
            return False
        self._remove(namespace, space, label)
        return True

    def flush_namespace(self, namespace: str) -> int:
        space = self._spaces.pop(namespace, None)
        if space is None:
            return 0
        for label in space.items:
            self._lru.pop((namespace, label), None)
        return len(space.items)

    def flush_prefix(self, prefix: str) -> int:
        return sum(self.flush_namespace(ns) for ns in [n for n in self._spaces
                                                       if n.startswith(prefix)])  # fmt: skip

    def statistics(self) -> IndexStats:
        s = self.stats
        return IndexStats(len(self._lru), len(self._spaces), s.evictions, s.expirations)

    def _touch(self, namespace: str, space: _Space, label: int) -> None:
        space.lru[label] = None
        space.lru.move_to_end(label)
        self._lru[(namespace, label)] = None
        self._lru.move_to_end((namespace, label))

    def _remove(
        self, namespace: str, space: _Space, label: int, *, drop_empty: bool = True
    ) -> None:
        item = space.items.pop(label)
        del space.by_entry[item.entry_id]
        space.lru.pop(label, None)
        self._lru.pop((namespace, label), None)
        space.index.mark_deleted(label)
        if drop_empty and not space.items:
            del self._spaces[namespace]


class HnswIndex:
    """Async face of :class:`HnswCore`: every call runs in a worker thread, one at a time."""

    def __init__(self, core: HnswCore | None = None) -> None:
        self.core = core or HnswCore()
        self._lock = trio.CapacityLimiter(1)

    async def search(self, namespace: str, vec: np.ndarray, k: int = 1, *, now: float) -> list[Hit]:
        return await trio.to_thread.run_sync(
            self.core.search, namespace, vec, k, now, limiter=self._lock
        )

    async def add(
        self,
        namespace: str,
        entry_id: str,
        vec: np.ndarray,
        prompt: str,
        *,
        expires_at: float,
        now: float,
    ) -> None:
        await trio.to_thread.run_sync(
            self.core.add, namespace, entry_id, vec, prompt, expires_at, limiter=self._lock
        )

    async def delete(self, namespace: str, entry_id: str) -> bool:
        return await trio.to_thread.run_sync(
            self.core.delete, namespace, entry_id, limiter=self._lock
        )

    async def flush_namespace(self, namespace: str) -> int:
        return await trio.to_thread.run_sync(
            self.core.flush_namespace, namespace, limiter=self._lock
        )

    async def flush_prefix(self, prefix: str) -> int:
        return await trio.to_thread.run_sync(self.core.flush_prefix, prefix, limiter=self._lock)

    async def add_many(self, items: Sequence[Item]) -> None:
        """:meth:`HnswCore.add_many`, in one trip to the index's thread."""
        await trio.to_thread.run_sync(self.core.add_many, items, limiter=self._lock)


__all__ = ["Hit", "HnswCore", "HnswIndex", "IndexStats", "Item", "VectorIndex"]
