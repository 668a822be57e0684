"""The pair cross-encoder (FROZEN v25): the shipped model file, its verdicts at the default cut
on pairs written for this test (in no data set), one run per pair in a worker thread, and the
wheel that carries it."""

from __future__ import annotations

import threading
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import trio

from trioproxy.cache import cross_encoder
from trioproxy.cache.band import BAND_PRESETS
from trioproxy.cache.cross_encoder import MAX_LEN, MODEL_FILE, pair_ids, score
from trioproxy.cache.embedder import LocalEmbedder, OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.semantic import SemanticCache
from trioproxy.cache.vector_index import HnswIndex
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest, Usage

CUT = BAND_PRESETS[0.01].cut

NEAR_MISSES = [
    # one slot changed: the cached answer is wrong for the new prompt
    ("What time zone is Chicago in?", "What time zone is Denver in?"),
    ("How to center a div horizontally in CSS", "How to center a div vertically in CSS"),
    ("How do I convert a PDF to Word?", "How do I convert a Word document to PDF?"),
]
PARAPHRASES = [
    ("What's the quickest way to boil an egg?", "Fastest method to hard boil eggs?"),
    (
        "How can I undo my last git commit?",
        "What's the command to revert the most recent commit in git?",
    ),
    (
        "What is the boiling point of water at sea level?",
        "At sea level, at what temperature does water boil?",
    ),
]


def test_the_package_ships_the_model() -> None:
    path = resources.files("trioproxy.cache").joinpath(MODEL_FILE)
    assert path.is_file() and 20e6 < len(path.read_bytes()) < 30e6


@pytest.mark.parametrize(("cached", "new"), NEAR_MISSES)
def test_near_misses_are_refused(cached: str, new: str) -> None:
    assert score(new, cached) < CUT


@pytest.mark.parametrize(("cached", "new"), PARAPHRASES)
def test_paraphrases_are_served(cached: str, new: str) -> None:
    assert score(new, cached) >= CUT


def test_the_score_is_symmetric_and_one_run_scores_both_orders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached, new = PARAPHRASES[0]
    assert score(new, cached) == pytest.approx(score(cached, new), abs=1e-6)
    session, _ = cross_encoder._load()
    runs: list[int] = []

    class Counting:
        def run(self, names, feeds):  # type: ignore[no-untyped-def]
            runs.append(len(feeds["input_ids"]))
            return session.run(names, feeds)

    monkeypatch.setattr(cross_encoder, "_session", Counting())
    score(new, cached)
    assert runs == [2]


def test_a_long_pair_is_cut_to_the_trained_length() -> None:
    ids, types = pair_ids(list(range(1000, 1100)), list(range(2000, 2010)))
    assert len(ids) == len(types) == MAX_LEN
    assert ids.count(102) == 2 and types.count(1) == 11  # the short side kept whole
    assert score("word " * 400, "word " * 300) == score("word " * 300, "word " * 400)


def req(text: str) -> ChatRequest:
    chat = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return ChatRequest("openai", chat, chat, "chat", False, False, None)


CFG = CacheConfig(semantic_ttl_s=60)
ENTRY = CacheEntry("answer", "stop", Usage(10, 5), "m", 1_000, 0.0)


def band_hit_cache() -> tuple[LocalEmbedder, SemanticCache]:
    """A semantic cache on the real embedder (start ``emb.run`` in a nursery)."""
    model = OnnxMiniLM()
    emb = LocalEmbedder(model)
    return emb, SemanticCache(emb, HnswIndex(), MemoryExactCache(), vocabulary=model.vocabulary())


async def test_the_cache_scores_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A band hit the alignment refuses is scored off the event loop's thread."""
    from trioproxy.cache import semantic

    loop = threading.get_ident()
    where: list[bool] = []

    def spy(new: str, cached: str) -> float:
        where.append(threading.get_ident() == loop)
        return score(new, cached)

    monkeypatch.setattr(semantic, "score", spy)

    emb, cache = band_hit_cache()
    cached, new = PARAPHRASES[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        assert await cache.store(req(cached), "team:a", "chat", CFG, ENTRY, now=0.0)
        out = await cache.lookup(req(new), "team:a", "chat", CFG, now=1.0)
        nursery.cancel_scope.cancel()
    assert out.hit is not None
    assert where == [False]


async def test_a_burst_of_band_hits_runs_the_model_two_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each model run takes a worker thread and ~10-20 ms of a core: of six lookups at once
    two run the model (``MODEL_THREADS``), the others that reach it wait for the cache's
    limiter, not for Trio's 40 default threads and both cores."""
    from trioproxy.cache import semantic

    release = threading.Event()
    lock, running, most = threading.Lock(), [0], [0]

    def held(new: str, cached: str) -> float:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(60)
        with lock:
            running[0] -= 1
        return 10.0

    monkeypatch.setattr(semantic, "score", held)

    emb, cache = band_hit_cache()
    cached, new = PARAPHRASES[1]
    hits: list[bool] = []

    async def look() -> None:
        out = await cache.lookup(req(new), "team:a", "chat", CFG, now=1.0)
        hits.append(out.hit is not None)

    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        assert await cache.store(req(cached), "team:a", "chat", CFG, ENTRY, now=0.0)
        async with trio.open_nursery() as lookups:
            for _ in range(6):
                lookups.start_soon(look)
            with trio.fail_after(60):  # two in the model, the others waiting for the limiter
                while (s := cache._model_runs.statistics()).tasks_waiting < 1:
                    await trio.sleep(0.01)  # (the embedder may shed some lookups: misses)
            assert s.borrowed_tokens == semantic.MODEL_THREADS == 2 and running[0] == 2
            release.set()
        nursery.cancel_scope.cancel()
    assert hits.count(True) >= 3 and most[0] == 2


async def test_a_model_that_fails_makes_a_band_hit_a_miss_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The model loads at the first band hit that needs it, inside a request: a load that
    fails (an onnxruntime that cannot read the file) raised out of the lookup, a 500 for
    every band hit. Now it is a miss, counted and logged (once per interval)."""
    from trioproxy.cache import semantic

    def broken(new: str, cached: str) -> float:
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH")

    monkeypatch.setattr(semantic, "score", broken)
    emb, cache = band_hit_cache()
    cached, new = PARAPHRASES[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        assert await cache.store(req(cached), "team:a", "chat", CFG, ENTRY, now=0.0)
        outs = [await cache.lookup(req(new), "team:a", "chat", CFG, now=1.0) for _ in range(3)]
        nursery.cancel_scope.cancel()
    assert [o.hit for o in outs] == [None] * 3
    assert cache.stats.model_failures == 3
    lines = [r for r in caplog.records if "cross-encoder failed" in r.getMessage()]
    assert len(lines) == 1 and "INVALID_GRAPH" in lines[0].getMessage()


def test_the_wheel_carries_the_model(tmp_path: Path) -> None:
    from tests.test_wheel import build_wheel

    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo(f"trioproxy/cache/{MODEL_FILE}")
    assert info.file_size == len(
        resources.files("trioproxy.cache").joinpath(MODEL_FILE).read_bytes()
    )
