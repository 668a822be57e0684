"""A namespace's vectors searched exactly, for the namespaces too small for hnswlib.

Every hnswlib index holds 65,536 mutexes for its label operations whatever its size: 2.5 MB
of memory for an empty one (measured, hnswlib 0.8). A semantic namespace is a tenant's route,
system prompt and earlier turns, so a chat app makes one per conversation, and one hnswlib
index each cost a worker 2.8 GB for 100,000 prompts in 1,000 namespaces
(``loadtest/index_memory.py --namespaces 1000``). :class:`FlatIndex` keeps a small
namespace's vectors in one array and answers a query with one matrix-vector product (exact,
~0.1 ms at 1,024 vectors); :class:`~trioproxy.cache.vector_index.HnswCore` moves a namespace
to hnswlib when it outgrows :data:`FLAT_MAX`.

It answers the calls of hnswlib's ``Index`` that the core makes, with the same meaning:
labels are the caller's, the cosine distance is ``1 - cos`` of the normalized vectors, and
a deleted label's row is reused by the next add.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLAT_MAX = 1_024
"""Vectors a namespace keeps in a :class:`FlatIndex`; past them it moves to hnswlib."""


class FlatIndex:
    def __init__(self, dim: int, capacity: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.labels = np.full(capacity, -1, dtype=np.int64)
        """The label at each row; -1: free."""
        self.row_of: dict[int, int] = {}
        self._free: list[int] = list(range(capacity - 1, -1, -1))

    def get_max_elements(self) -> int:
        return len(self.labels)

    def resize_index(self, capacity: int) -> None:
        old = len(self.labels)
        if capacity <= old:
            return
        self.vectors = np.concatenate(
            (self.vectors, np.zeros((capacity - old, self.dim), dtype=np.float32))
        )
        self.labels = np.concatenate((self.labels, np.full(capacity - old, -1, dtype=np.int64)))
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free

    def add_items(
        self, vecs: np.ndarray, labels: Sequence[int], replace_deleted: bool = True
    ) -> None:
        vecs = np.asarray(vecs, dtype=np.float32).reshape(len(labels), self.dim)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = vecs / np.where(norms > 0, norms, 1.0)
        for vec, label in zip(vecs, labels, strict=True):
            row = self.row_of.get(label)
            if row is None:
                if not self._free:
                    raise RuntimeError("the index is full: resize it first")
                row = self._free.pop()
                self.row_of[label] = row
                self.labels[row] = label
            self.vectors[row] = vec

    def mark_deleted(self, label: int) -> None:
        row = self.row_of.pop(label)
        self.labels[row] = -1
        self._free.append(row)

    def knn_query(self, vec: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live labels and their distances, nearest first: shapes (1, k)."""
        if k > len(self.row_of):
            raise RuntimeError(f"asked for {k} of {len(self.row_of)} vectors")
        q = np.asarray(vec, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        sims = self.vectors @ (q / norm if norm > 0 else q)
        sims[self.labels < 0] = -np.inf
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")][:k]
        return self.labels[top].reshape(1, -1), (1.0 - sims[top]).reshape(1, -1)

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """The live vectors and their labels (to move them to hnswlib)."""
        rows = np.flatnonzero(self.labels >= 0)
        return self.vectors[rows], self.labels[rows]


__all__ = ["FLAT_MAX", "FlatIndex"]
