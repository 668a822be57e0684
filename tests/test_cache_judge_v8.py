"""The pair judge (since v8; the cross-encoder since FROZEN v25): the guard's one-sided
protected-term veto may be overruled by the cross-encoder (at or above the floor, at the
band's stricter ``term_cut``, where the band allows it), and the cross-encoder alone may
serve a pair a little below the floor (down to the band's ``reach``). Chosen on v20-v24, which did not
train it (``loadtest/ce_eval.py``, loadtest/README.md)."""

from __future__ import annotations

import pytest
import trio

from trioproxy.cache import cross_encoder
from trioproxy.cache.band import BAND_PRESETS, TERM_CUT, Band
from trioproxy.cache.cross_encoder import serves
from trioproxy.cache.embedder import LocalEmbedder, OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.guard import near_miss, term_only
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


def _tokens(minilm: OnnxMiniLM, cached: str, new: str):  # type: ignore[no-untyped-def]
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    return b.tokens, a.tokens


class Scores:
    """The cross-encoder's score as the test sets it, and how often it ran."""

    def __init__(self) -> None:
        self.value = 0.0
        self.calls = 0

    def __call__(self, new: str, cached: str) -> float:
        self.calls += 1
        return self.value


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch) -> Scores:
    fake = Scores()
    monkeypatch.setattr(cross_encoder, "score", fake)
    return fake


def test_term_veto_is_judged_at_the_cut_and_only_above_the_floor(
    minilm: OnnxMiniLM, scored: Scores
) -> None:
    cached_text, new_text = (
        "How many continents are there?",
        "How many continents are there on Earth?",
    )
    new, cached = _tokens(minilm, cached_text, new_text)
    vocab = minilm.vocabulary()
    band = Band(0.80, 1.0, 0.85, 1.0, 0.75, 3.0)

    def judged(cosine: float, b: Band = band) -> bool:
        return serves(new_text, cached_text, new, cached, cosine, vocab, b, term_veto=True)

    scored.value = 3.0
    assert judged(0.85)
    scored.value = 2.99
    assert not judged(0.85)  # above the main cut, below the term cut
    assert serves(new_text, cached_text, new, cached, 0.85, vocab, band)  # without the veto
    scored.value = 5.0
    assert not judged(0.85, Band(0.80, 1.0, 0.85, 1.0, 0.75))  # no overrule
    assert not judged(0.79)  # below the floor: the veto is final


def test_reach_below_the_floor_is_the_cross_encoder_alone(
    minilm: OnnxMiniLM, scored: Scores
) -> None:
    cached_text, new_text = "How to reverse a list?", "How do I reverse a list in Python?"
    new, cached = _tokens(minilm, cached_text, new_text)
    vocab = minilm.vocabulary()
    band = Band(0.80, 1.0, 0.85, 1.0, 0.75, 3.0)

    def judged(cosine: float, b: Band = band) -> bool:
        return serves(new_text, cached_text, new, cached, cosine, vocab, b)

    scored.value = 1.5
    assert judged(0.77)
    assert not judged(0.74)  # below the reach
    scored.value = 0.5
    assert not judged(0.77)
    no_reach = Band(0.80, 1.0, 0.85, 1.0)
    scored.value = 5.0
    assert not judged(0.77, no_reach)
    assert band.lowest == 0.75 and no_reach.lowest == 0.80
    assert Band(0.80, 1.0, 0.85, reach=0.75).lowest == 0.80  # no cut: the model never serves


def test_an_aligned_pair_above_the_floor_needs_no_model(minilm: OnnxMiniLM, scored: Scores) -> None:
    text = "How do I sort a list in Python?"
    new, cached = _tokens(minilm, text, text)
    scored.value = -10.0
    band = Band(0.80, 1.0, 0.85, 1.0, 0.75, 3.0)
    assert serves(text, text, new, cached, 0.9, minilm.vocabulary(), band)
    assert scored.calls == 0
    assert not serves(text, text, new, cached, 0.78, minilm.vocabulary(), band)  # reach: model


def test_default_preset_has_the_judge_and_an_explicit_floor_has_no_reach() -> None:
    d = BAND_PRESETS[0.01]
    assert d.reach == 0.75 and d.cut == 1.0 and d.term_overrule and d.term_cut == TERM_CUT
    assert route_band(CacheConfig()).lowest == 0.75
    assert route_band(CacheConfig(semantic_threshold=0.85)).lowest == 0.85
    assert BAND_PRESETS[0.005].lowest == BAND_PRESETS[0.005].floor  # strictest: no reach
    assert not BAND_PRESETS[0.005].term_overrule
    cuts = [b.cut for _, b in sorted(BAND_PRESETS.items())]
    assert cuts == sorted(cuts, reverse=True)  # a stricter target never has a lower cut


def _req(text: str) -> ChatRequest:
    chat = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return ChatRequest("openai", chat, chat, "chat", False, False, None)


ENTRY = CacheEntry("answer", "stop", Usage(10, 5), "m", 1_000, 0.0)


@pytest.mark.parametrize(
    ("cached", "new", "served"),
    [
        # the guard's one-sided term veto ("RAM"), overruled by the shipped cross-encoder (a
        # v7 pair: it trained the model; this checks the path, ce_eval.py the generalisation)
        (
            "How do I check memory usage on a Linux server?",
            "linux box: how can I see how much RAM is being used?",
            True,
        ),
        # one-sided too, but an inserted variant or constraint: the cross-encoder keeps the veto
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
