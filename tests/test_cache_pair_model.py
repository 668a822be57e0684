"""The pair model: shipped weights, its verdict on rewrites the alignment refuses, and the
band's cut (a cut above 1 turns it off)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trioproxy.cache.band import BAND_PRESETS, Band
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss
from trioproxy.cache.pair_model import (
    PAIR_FEATURES,
    TOKEN_FEATURES,
    PairWeights,
    pair_features,
    probability,
    serves,
    shipped_weights,
)
from trioproxy.cache.verifier import verify


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


def test_shipped_weights_match_the_features() -> None:
    w = shipped_weights()
    assert w.pair.shape == (len(PAIR_FEATURES),)
    assert w.token.shape == (len(TOKEN_FEATURES),)
    assert w.vector.shape == (OnnxMiniLM.dim,)
    back = PairWeights.from_json(w.to_json())
    assert np.allclose(back.token, w.token, atol=1e-5) and abs(back.bias - w.bias) < 1e-5
    assert json.loads(w.to_json())["token_features"] == list(TOKEN_FEATURES)


def _pair(minilm: OnnxMiniLM, cached: str, new: str):  # type: ignore[no-untyped-def]
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    return b.tokens, a.tokens, float(a.vec @ b.vec)


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I delete a directory in Linux?", "How do I remove a folder in Linux?"),
        ("How do I delete a directory on a Mac?", "How do I remove a folder on a Mac?"),
    ],
)  # the first trained the model (loadtest/data/pair_model_extra.json), the second did not
def test_rewrites_the_alignment_refuses_are_served(
    minilm: OnnxMiniLM, cached: str, new: str
) -> None:
    new_t, cached_t, cos = _pair(minilm, cached, new)
    vocab = minilm.vocabulary()
    band = BAND_PRESETS[0.01]
    assert verify(new_t, cached_t, vocab, band.align) is not None  # alignment alone refuses
    assert probability(new_t, cached_t, cos, vocab) >= band.accept
    assert serves(new_t, cached_t, cos, vocab, band)
    off = Band(band.floor, band.ceiling, band.align, 2.0)
    assert not serves(new_t, cached_t, cos, vocab, off)  # a cut above 1: alignment only


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("Do all planets have moons?", "Do any planets have moons?"),
        ("How do I sort a list in ascending order?", "How do I sort a list in descending order?"),
        ("How do I reverse a linked list?", "How do I reverse a linked list without recursion?"),
        ("How do I get the first row of a DataFrame?", "How do I get the last row of a DataFrame?"),
        ("What are the pros of remote work?", "What are the cons of remote work?"),
    ],
)
def test_near_misses_stay_refused(minilm: OnnxMiniLM, cached: str, new: str) -> None:
    new_t, cached_t, cos = _pair(minilm, cached, new)
    vocab = minilm.vocabulary()
    vetoed = near_miss(new, cached) is not None  # the guard runs first and stays a veto
    for band in BAND_PRESETS.values():
        assert vetoed or not serves(new_t, cached_t, cos, vocab, band)
        assert vetoed or not serves(cached_t, new_t, cos, vocab, band)


def test_identical_prompts_have_no_unmatched_pieces(minilm: OnnxMiniLM) -> None:
    new_t, cached_t, _ = _pair(minilm, "How do I boil an egg?", "How do I boil an egg?")
    pair, feats, vecs = pair_features(new_t, cached_t, minilm.vocabulary())
    assert feats.shape == (0, len(TOKEN_FEATURES)) and vecs.shape[0] == 0 and pair[1] == 0
