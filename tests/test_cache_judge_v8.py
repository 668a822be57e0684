"""The v8 pair judge: the guard's one-sided protected-term veto may be overruled by the pair
model (told of the veto, at the band's ``term_accept``), and the pair model alone may serve a
pair a little below the floor (down to the band's ``reach``, at ``reach_accept``). Chosen on
the leave-one-writer-set-out table of ``loadtest/leave_out.py`` (loadtest/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from trioproxy.cache.band import BAND_PRESETS, Band
from trioproxy.cache.embedder import LocalEmbedder, OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.guard import near_miss, term_only
from trioproxy.cache.pair_model import PAIR_FEATURES, TOKEN_FEATURES, PairWeights, serves
from trioproxy.cache.semantic import SemanticCache, route_band
from trioproxy.cache.vector_index import HnswIndex
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest, Usage


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.mark.parametrize(
    ("cached", "new", "overrulable"),
    [
        # a protected term on one side only, no other rule: the judge may overrule
        ("How many continents are there?", "How many continents are there on Earth?", True),
        (
            "Is it safe to freeze cooked rice?",
            "Is it safe to freeze cooked rice in Tupperware?",
            True,
        ),
        (
            "What is the battery capacity of the iPhone 15?",
            "What is the battery capacity of the iPhone 15 Pro?",
            True,
        ),
        # terms swapped (each side has one the other lacks): final
        ("How do I install Docker on Ubuntu?", "How do I install Docker on Fedora?", False),
        # one-sided, but another rule fires behind it (show/hide): final
        ("How do I show hidden files?", "How do I hide files on macOS?", False),
    ],
)
def test_term_only(cached: str, new: str, overrulable: bool) -> None:
    assert near_miss(new, cached) == "term"
    assert term_only(new, cached) is overrulable
    assert term_only(cached, new) is overrulable


def _weights(bias: float, term: float = 0.0) -> PairWeights:
    pair = np.zeros(len(PAIR_FEATURES), np.float32)
    pair[PAIR_FEATURES.index("term")] = term
    token = np.zeros(len(TOKEN_FEATURES), np.float32)
    token[TOKEN_FEATURES.index("bias")] = -30.0  # softplus(-30) ~ 0: pieces add no penalty
    return PairWeights(bias, pair, token, np.zeros(OnnxMiniLM.dim, np.float32))


def _tokens(minilm: OnnxMiniLM, cached: str, new: str):  # type: ignore[no-untyped-def]
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    return b.tokens, a.tokens


def test_term_veto_is_judged_at_term_accept_and_only_above_the_floor(minilm: OnnxMiniLM) -> None:
    new, cached = _tokens(
        minilm, "How many continents are there?", "How many continents are there on Earth?"
    )
    vocab = minilm.vocabulary()
    band = Band(0.80, 1.0, 0.85, 0.70, 0.75, 0.90, 0.90)
    yes, no = _weights(5.0), _weights(5.0, term=-10.0)  # p = 0.993; with the veto 0.007
    assert serves(new, cached, 0.85, vocab, band, term_veto=True, weights=yes)
    assert not serves(new, cached, 0.85, vocab, band, term_veto=True, weights=no)
    assert serves(new, cached, 0.85, vocab, band, weights=no)  # without the veto: 0.993
    off = Band(0.80, 1.0, 0.85, 0.70, 0.75, 0.90, 2.0)
    assert not serves(new, cached, 0.85, vocab, off, term_veto=True, weights=yes)
    assert not serves(new, cached, 0.79, vocab, band, term_veto=True, weights=yes)  # below floor


def test_reach_below_the_floor_is_the_pair_model_alone(minilm: OnnxMiniLM) -> None:
    new, cached = _tokens(minilm, "How do I reverse a list in Python?", "How to reverse a list?")
    vocab = minilm.vocabulary()
    band = Band(0.80, 1.0, 0.85, 0.70, 0.75, 0.90, 0.90)
    sure, unsure = _weights(5.0), _weights(1.5)  # p = 0.993 and 0.82 (above accept, below 0.90)
    assert serves(new, cached, 0.77, vocab, band, weights=sure)
    assert not serves(new, cached, 0.77, vocab, band, weights=unsure)  # reach_accept 0.90
    assert serves(new, cached, 0.85, vocab, band, weights=unsure)  # above the floor: accept 0.70
    assert not serves(new, cached, 0.74, vocab, band, weights=sure)  # below the reach
    no_reach = Band(0.80, 1.0, 0.85, 0.70)
    assert not serves(new, cached, 0.77, vocab, no_reach, weights=sure)
    assert band.lowest == 0.75 and no_reach.lowest == 0.80


def test_default_preset_has_the_judge_and_an_explicit_floor_has_no_reach() -> None:
    d = BAND_PRESETS[0.01]
    assert d.reach == 0.75 and d.reach_accept <= 1.0 and d.term_accept <= 1.0
    assert route_band(CacheConfig()).lowest == 0.75
    assert route_band(CacheConfig(semantic_threshold=0.85)).lowest == 0.85
    assert BAND_PRESETS[0.005].lowest == BAND_PRESETS[0.005].floor  # strictest: unchanged
    assert BAND_PRESETS[0.005].term_accept > 1.0


def _req(text: str) -> ChatRequest:
    chat = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return ChatRequest("openai", chat, chat, "chat", False, False, None)


ENTRY = CacheEntry("answer", "stop", Usage(10, 5), "m", 1_000, 0.0)


@pytest.mark.parametrize(
    ("cached", "new", "served"),
    [
        # the guard's one-sided term veto ("RAM"), overruled by the shipped pair model (a v7
        # pair: it trained the model; this checks the path, leave_out.py the generalisation)
        (
            "How do I check memory usage on a Linux server?",
            "linux box: how can I see how much RAM is being used?",
            True,
        ),
        # one-sided too, but an inserted variant or constraint: the pair model keeps the veto
        (
            "What's the battery capacity of the iPhone 15?",
            "What's the battery capacity of the iPhone 15 Pro?",
            False,
        ),
        ("How do I reverse a string?", "How do I reverse a string in Python?", False),
        # swapped terms: the veto is final
        ("How do I install Docker on Ubuntu?", "How do I install Docker on Fedora?", False),
    ],
)
async def test_semantic_cache_overrules_only_what_the_judge_accepts(
    minilm: OnnxMiniLM, cached: str, new: str, served: bool
) -> None:
    emb = LocalEmbedder(minilm)
    cache = SemanticCache(emb, HnswIndex(), MemoryExactCache(), vocabulary=minilm.vocabulary())
    cfg = CacheConfig(semantic_ttl_s=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        assert await cache.store(_req(cached), "team:a", "chat", cfg, ENTRY, now=0.0)
        out = await cache.lookup(_req(new), "team:a", "chat", cfg, now=1.0)
        assert (out.hit is not None) is served
        if not served:
            assert cache.stats.guard_rejects["term"] == 1
        nursery.cancel_scope.cancel()
