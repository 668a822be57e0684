from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
import trio
import trio.testing

from trioproxy.cache.embedder import Embedding, LocalEmbedder, OnnxMiniLM, OpenAIEmbedder


@pytest.fixture(scope="session")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


def test_model_vectors_are_unit_and_meaningful(minilm: OnnxMiniLM) -> None:
    v = minilm.embed_many(
        ["how do I reverse a list in python", "how can I reverse a python list", "bake a cake"]
    )
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > 0.95
    assert float(v[0] @ v[2]) < 0.2


def test_batch_matches_single_despite_padding(minilm: OnnxMiniLM) -> None:
    texts = ["short", "a much longer sentence that needs padding in a batch with a short one"]
    batch = minilm.embed_many(texts)
    for i, t in enumerate(texts):
        assert np.allclose(batch[i], minilm.embed_many([t])[0], atol=1e-4)


def test_token_vectors_are_unit_and_unaffected_by_padding(minilm: OnnxMiniLM) -> None:
    texts = ["short one", "a much longer sentence that needs padding in a batch"]
    batch = minilm.run_embeddings([minilm.ids(t) for t in texts])
    for i, t in enumerate(texts):
        single = minilm.embed_one(t)
        got = batch[i].tokens
        assert got is not None and single.tokens is not None
        assert got.vecs.shape == (len(minilm.ids(t)) - 2, 384)
        assert np.allclose(np.linalg.norm(got.vecs.astype(np.float32), axis=1), 1.0, atol=1e-2)
        assert np.allclose(got.vecs, single.tokens.vecs, atol=1e-2)
        assert np.allclose(batch[i].vec, minilm.embed_many([t])[0], atol=1e-4)


def test_long_input_is_truncated_not_rejected(minilm: OnnxMiniLM) -> None:
    assert len(minilm.ids("word " * 1000)) == 256
    assert minilm.embed_many(["word " * 1000]).shape == (1, 384)


async def test_concurrent_embeds_equal_each_prompt_alone(minilm: OnnxMiniLM) -> None:
    emb = LocalEmbedder(minilm, threads=2, max_pending=64)
    texts = [f"question number {i} about caching" for i in range(24)]
    out: dict[int, Embedding | None] = {}

    async def one(i: int) -> None:
        out[i] = await emb.embed(texts[i])

    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        async with trio.open_nursery() as inner:
            for i in range(len(texts)):
                inner.start_soon(one, i)
        nursery.cancel_scope.cancel()
    for i in range(len(texts)):
        got = out[i]
        alone = minilm.embed_many([texts[i]])[0]
        assert got is not None and np.allclose(got.vec, alone, atol=1e-5)
        assert got.tokens is not None and got.tokens.ids.tolist() == minilm.ids(texts[i])[1:-1]
    stats = emb.statistics()
    assert stats.embedded == 24 and stats.pending == 0


class GatedModel(OnnxMiniLM):
    """The real model, but each run waits until the test opens the gate."""

    def __init__(self, model: OnnxMiniLM) -> None:
        self._session = model._session
        self.tokenize = model.tokenize
        self.space = model.space
        self.gate = threading.Event()

    def run_embeddings(self, batch: Sequence[list[int]]) -> list[Embedding]:
        self.gate.wait(timeout=10)
        return super().run_embeddings(batch)


async def test_saturated_embedder_returns_none_at_once(minilm: OnnxMiniLM) -> None:
    model = GatedModel(minilm)
    emb = LocalEmbedder(model, threads=1, max_pending=2)
    results: list[Embedding | None] = []

    async def one() -> None:
        results.append(await emb.embed("some prompt text"))

    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        async with trio.open_nursery() as inner:
            for _ in range(5):
                inner.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            # two are pending (one in the gated thread); the three others were refused at once
            assert results == [None, None, None]
            assert emb.statistics().pending == 2
            model.gate.set()
        nursery.cancel_scope.cancel()
    assert sum(r is not None for r in results) == 2
    assert emb.statistics().skipped_saturated == 3


async def test_a_dead_embedder_is_a_miss_not_an_error_or_a_hang(minilm: OnnxMiniLM) -> None:
    model = GatedModel(minilm)
    emb = LocalEmbedder(model, threads=1, max_pending=4)
    assert await emb.embed("x") is None  # not running (crashed, restarting): a miss
    assert emb.statistics().skipped_down == 1
    results: list[np.ndarray | None] = []

    async def one() -> None:
        results.append(await emb.embed("some prompt text"))

    with trio.fail_after(20):
        async with trio.open_nursery() as callers:
            async with trio.open_nursery() as service:
                await service.start(emb.run)
                callers.start_soon(one)
                callers.start_soon(one)
                await trio.testing.wait_all_tasks_blocked()
                assert emb.statistics().pending == 2  # one in the gated thread, one queued
                service.cancel_scope.cancel()  # the dispatcher dies
                model.gate.set()
    assert len(results) == 2 and None in results  # the queued one was released with a miss
    assert emb.statistics().pending == 0


async def test_a_caller_that_gives_up_takes_its_queued_prompt_with_it(
    minilm: OnnxMiniLM,
) -> None:
    """A lookup cancelled by its bound while its prompt waits: the prompt leaves the queue (no
    embedding for nobody under overload, and the queue's room is back); one already running
    finishes in its thread."""
    model = GatedModel(minilm)
    emb = LocalEmbedder(model, threads=1, max_pending=4)
    with trio.fail_after(20):
        async with trio.open_nursery() as service:
            await service.start(emb.run)
            async with trio.open_nursery() as callers:
                running = trio.CancelScope()
                queued = trio.CancelScope()

                async def under(scope: trio.CancelScope) -> None:
                    with scope:
                        await emb.embed("some prompt text")

                callers.start_soon(under, running)
                await trio.testing.wait_all_tasks_blocked()
                callers.start_soon(under, queued)
                await trio.testing.wait_all_tasks_blocked()
                assert emb.statistics().pending == 2  # one in the gated thread, one queued
                queued.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert emb.statistics().pending == 1
                running.cancel()
                model.gate.set()
            while emb.statistics().embedded < 1:  # the abandoned one finishes in its thread
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            # the dispatcher got the freed thread for the prompt that left: it gives it back
            # (it popped an empty queue and the whole embedder died, CI run of stop 27)
            assert emb.statistics().pending == 0
            assert await emb.embed("another prompt") is not None
            service.cancel_scope.cancel()
    assert emb.statistics().embedded == 2 and emb.statistics().pending == 0


async def test_openai_embedder_normalises_and_fails_soft() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if body["input"] == "boom":
            return httpx.Response(500, json={"error": {"message": "down"}})
        if body["input"] == "bad":
            return httpx.Response(200, json={"data": [{"embedding": [1.0]}]})
        return httpx.Response(200, json={"data": [{"embedding": [3.0, 4.0, 0.0]}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        emb = OpenAIEmbedder(client, base_url="http://up/v1/", model="m", dim=3, api_key="k")
        got = await emb.embed("hello")
        assert got is not None and np.allclose(got.vec, [0.6, 0.8, 0.0]) and got.tokens is None
        assert seen[0] == {"model": "m", "input": "hello"}
        assert await emb.embed("boom") is None
        assert await emb.embed("bad") is None  # wrong dimension
        assert emb.failures == 2


def test_blingfire_models_are_loaded_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """blingfire keeps every model it loads until ``free_model``: an embedder per gateway
    (a test suite builds hundreds) must not load its tokenizer again each time."""
    import blingfire  # type: ignore[import-untyped]

    from trioproxy.cache import embedder

    loads: list[str] = []
    real = blingfire.load_model
    monkeypatch.setattr(blingfire, "load_model", lambda path: loads.append(path) or real(path))
    embedder._blingfire_model.cache_clear()
    try:
        for _ in range(3):
            assert embedder.blingfire_tokenizer()("hello world")
            assert embedder.blingfire_pieces()(7592) == "hello"
    finally:
        embedder._blingfire_model.cache_clear()  # the patched loader's handles: not kept
    assert sorted(p.rsplit("/", 1)[1] for p in loads) == ["bert_base_tok.bin", "bert_base_tok.i2w"]


async def test_an_embedder_releases_its_own_models_session_when_it_stops(
    minilm: OnnxMiniLM,
) -> None:
    """The ONNX session (~45 MB native) goes when the service stops, not when a garbage
    collection finds the gateway around it; a restart loads it again. A model passed in is
    its owner's: left loaded. Its own model loads in the service, not on the caller's
    thread (a first start builds the model file there)."""
    emb = LocalEmbedder()
    assert not emb.model.loaded
    for _ in range(2):  # stopped, then restarted (as the supervisor restarts a service)
        async with trio.open_nursery() as nursery:
            await nursery.start(emb.run)
            assert emb.model.loaded
            got = await emb.embed("a prompt")
            assert got is not None and got.vec.shape == (384,)
            nursery.cancel_scope.cancel()
        assert not emb.model.loaded
    shared = LocalEmbedder(minilm)
    async with trio.open_nursery() as nursery:
        await nursery.start(shared.run)
        nursery.cancel_scope.cancel()
    assert minilm.loaded


async def test_a_gateways_embedder_session_goes_with_its_lifespan(nursery: trio.Nursery) -> None:
    import tempfile

    from tests.fixtures_gateway import DEMO_KEY, start_gateway, start_simulator
    from trioproxy.config import demo_settings

    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, demo_settings(sim.url, DEMO_KEY, state_dir=tempfile.mkdtemp()))
    assert g.app.cache is not None and g.app.cache.semantic is not None
    embedder = g.app.cache.semantic.embedder
    assert isinstance(embedder, LocalEmbedder) and embedder.model.loaded
    g.shutdown.set()  # SIGTERM: drain, then the lifespan stops the services
    with trio.fail_after(30):
        while embedder.model.loaded:
            await trio.sleep(0.01)


async def test_a_remote_embedders_client_closes_when_its_service_stops() -> None:
    """The HTTP client of an OpenAI-compatible embedder is closed when its service stops
    (at shutdown), not left to the garbage collector with its connections open."""
    body = {"data": [{"embedding": [1.0, 0.0, 0.0]}]}
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    )
    emb = OpenAIEmbedder(client, base_url="http://up/v1", model="m", dim=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        assert await emb.embed("hello") is not None
        assert not client.is_closed
        nursery.cancel_scope.cancel()
    assert client.is_closed


def test_the_wiring_starts_the_remote_embedders_service() -> None:
    from types import SimpleNamespace

    from trioproxy.config.model import EmbedderConfig
    from trioproxy.edge.services import NamedService
    from trioproxy.server.cache_service import _embedder

    services: list[NamedService] = []
    settings = SimpleNamespace(embedder=EmbedderConfig(kind="openai", dim=3))
    emb = _embedder(settings, services)  # type: ignore[arg-type]
    assert isinstance(emb, OpenAIEmbedder)
    assert [(s.name, s.run, s.required) for s in services] == [("embedder", emb.run, False)]
