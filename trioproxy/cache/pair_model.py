"""The pair model: a learned second opinion on band hits the alignment check refuses.

The alignment check (:func:`~trioproxy.cache.verifier.verify`) refuses a pair as soon as one
content word piece has no counterpart, which keeps near-misses out but also refuses most
rewrites ("What's the *command* to ...", "update"/"upgrade"). This model scores such a pair
from what the alignment computes anyway: every content piece of either prompt that is not in
the other (after filler, plurals, inflections), described by a few numbers (:data:`TOKEN_FEATURES`:
its best token-vector cosine to the other prompt, to the other prompt's own unmatched pieces,
whether it is a number or short code, WordNet's relation to the other prompt's words,
how rare the piece is, where it sits), plus a learned projection of the piece's own contextual
vector. Each such piece adds a non-negative penalty ``softplus(w . x + c)`` to the pair's
logit ``b + a * cosine``; the pair is served when ``sigmoid(logit) >= cut``.

Since v8 the same model also decides two cases the rest refuses outright (:func:`serves`): a
pair a little below the route's floor (down to the band's ``reach``, at ``reach_accept``), and
a pair the guard vetoed only for a protected term on one side
(:func:`~trioproxy.cache.guard.term_only`), told of the veto by the pair feature "term" (at
``term_accept``). Both were adopted from a leave-one-writer-set-out evaluation
(``loadtest/leave_out.py``), not from scores on the sets that trained it.

The weights (``pair_model.json``) are trained by ``loadtest/train_pair_model.py`` on the
project's own seen pairs (``loadtest/data``) and pairs written for it
(``loadtest/data/pair_model_extra.json``), and GPTCache pairs (MIT); nothing else. Pure: arrays
in, a probability out. The guard stays a veto before any of this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources

import numpy as np

from trioproxy.cache.band import Band
from trioproxy.cache.verifier import (
    _lettered,
    _pairs,
    _terms_at,
    lexically_unmatched,
    verify,
)
from trioproxy.cache.vocabulary import TokenView, Vocabulary, sequence, words

VOCAB_SIZE = 30522
TOKEN_FEATURES = (
    "gap85",  # relu(0.85 - best cosine to any piece of the other prompt)
    "gap70",
    "gap50",
    "partner",  # best cosine to a piece of the other prompt that is itself unmatched
    "lone",  # no unmatched piece on the other side at all (an insertion, not a swap)
    "exact",  # a number or a code of <= 2 characters
    "wordnet",  # WordNet relates the word to one of the other prompt's words
    "opposed",  # WordNet opposes it to an unmatched word of the other prompt
    "rarity",  # log of the word-piece id, scaled to [0, 1] (ids grow as words get rarer)
    "piece",  # part of a word of several pieces
    "first",  # within the prompt's first three words
    "quantifier",  # one of QUANTIFIERS ("all"/"any", "single"/"multiple")
    "bias",
)
MAX_LOOKUPS = 8
"""WordNet is asked for at most this many pieces of a pair; a pair still undecided then is
refused (the safe side), which bounds the cost of long prompts."""
_WORDNET = TOKEN_FEATURES.index("wordnet")
_OPPOSED = TOKEN_FEATURES.index("opposed")
PAIR_FEATURES = ("cosine", "count", "term")
"""The pair's cosine, its unmatched pieces / 4, and 1.0 when the guard vetoed the pair for a
protected term on one side only (the model judges whether to overrule it)."""
QUANTIFIERS = frozenset(
    "all any each every some single multiple only both either neither few many most several "
    "none more less entire whole whichever".split()
)
"""Words that change how much of a thing is asked about; the guard does not cover them."""


@dataclass(frozen=True, slots=True)
class PairWeights:
    bias: float
    pair: np.ndarray
    """[len(PAIR_FEATURES)]"""
    token: np.ndarray
    """[len(TOKEN_FEATURES)]"""
    vector: np.ndarray
    """[dim]: the learned projection of a piece's contextual vector (zeros: unused)."""

    @classmethod
    def from_json(cls, text: str) -> PairWeights:
        raw = json.loads(text)
        pair = np.zeros(len(PAIR_FEATURES), dtype=np.float32)
        given = np.asarray(raw["pair"], dtype=np.float32)
        pair[: len(given)] = given  # weights from before a pair feature was added: 0 for it
        return cls(
            float(raw["bias"]),
            pair,
            np.asarray(raw["token"], dtype=np.float32),
            np.asarray(raw["vector"], dtype=np.float32),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "bias": round(float(self.bias), 6),
                "pair": [round(float(x), 6) for x in self.pair],
                "token": [round(float(x), 6) for x in self.token],
                "vector": [round(float(x), 6) for x in self.vector],
                "pair_features": list(PAIR_FEATURES),
                "token_features": list(TOKEN_FEATURES),
            },
            indent=1,
        )


@lru_cache(maxsize=1)
def shipped_weights() -> PairWeights:
    text = resources.files("trioproxy.cache").joinpath("pair_model.json").read_text("utf-8")
    return PairWeights.from_json(text)


def _unmatched_pieces(new: TokenView, cached: TokenView, vocab: Vocabulary) -> list[int]:
    """Content pieces of ``new`` not in ``cached`` (as :func:`verifier.unmatched` sees them
    before the token vectors and WordNet are asked)."""
    return lexically_unmatched(new, cached, vocab)[0]


Lexical = Callable[[], tuple[float, float]]
"""A piece's two WordNet columns, asked only when needed (WordNet look-ups dominate the cost)."""


def _side(
    new: TokenView,
    cached: TokenView,
    vocab: Vocabulary,
    mine_todo: list[int],
    other_todo: list[int],
) -> tuple[np.ndarray, np.ndarray, list[Lexical]]:
    """Token features [k, len(TOKEN_FEATURES)] (the WordNet columns left 0), contextual
    vectors [k, dim] and, per piece, the call that answers its WordNet columns."""
    n = len(mine_todo)
    feats = np.zeros((n, len(TOKEN_FEATURES)), dtype=np.float32)
    vecs = new.vecs[mine_todo].astype(np.float32)
    if len(cached.ids):
        sims = vecs @ cached.vecs.astype(np.float32).T
        best = sims.max(axis=1)
        partner = sims[:, other_todo].max(axis=1) if other_todo else np.zeros(n, np.float32)
    else:
        best = np.zeros(n, np.float32)
        partner = np.zeros(n, np.float32)
    ids = new.ids.tolist()
    cids = cached.ids.tolist()
    mine = words(ids, vocab)
    their_words = words(cids, vocab)
    theirs = set(their_words) - set(mine)
    seq = sequence(ids, vocab)
    first = set(seq[:3])
    memo: dict[str, tuple[float, float]] = {}
    context: list[set[str]] = []

    def lexical(word: str) -> tuple[float, float]:
        if word not in memo:
            if not context:
                context.append({t for t in theirs | _pairs(sequence(cids, vocab)) if _lettered(t)})
                context.append({their_words[k] for k in other_todo})
            terms, others = context
            rel = any(
                _lettered(w) and any(o != w and vocab.related(w, o) for o in terms)
                for w in _terms_at(seq, word)
            )
            opp = any(vocab.opposed(word, o) for o in others if o != word)
            memo[word] = (1.0 if rel else 0.0, 1.0 if opp else 0.0)
        return memo[word]

    calls: list[Lexical] = []
    for row, k in enumerate(mine_todo):
        token = ids[k]
        word = mine[k]
        feats[row, 0] = max(0.0, 0.85 - best[row])
        feats[row, 1] = max(0.0, 0.70 - best[row])
        feats[row, 2] = max(0.0, 0.50 - best[row])
        feats[row, 3] = partner[row]
        feats[row, 4] = 0.0 if other_todo else 1.0
        feats[row, 5] = 1.0 if vocab.exact(token) else 0.0
        feats[row, 8] = math.log(max(token, 2)) / math.log(VOCAB_SIZE)
        feats[row, 9] = 1.0 if word != vocab.text(token) else 0.0
        feats[row, 10] = 1.0 if word in first else 0.0
        feats[row, 11] = 1.0 if word in QUANTIFIERS else 0.0
        feats[row, 12] = 1.0
        calls.append(partial(lexical, word))
    return feats, vecs, calls


def _unfilled(
    new: TokenView, cached: TokenView, vocab: Vocabulary
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Lexical]]:
    a = _unmatched_pieces(new, cached, vocab)
    b = _unmatched_pieces(cached, new, vocab)
    fa, va, ca = _side(new, cached, vocab, a, b)
    fb, vb, cb = _side(cached, new, vocab, b, a)
    feats = np.concatenate([fa, fb])
    vecs = np.concatenate([va, vb]) if len(feats) else np.zeros((0, new.vecs.shape[1]), np.float32)
    return np.array([0.0, len(feats) / 4.0, 0.0], dtype=np.float32), feats, vecs, ca + cb


def pair_features(
    new: TokenView, cached: TokenView, vocab: Vocabulary
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair features without the cosine, token features [k, f], token vectors [k, dim]) of
    the unmatched pieces of both prompts."""
    pair, feats, vecs, calls = _unfilled(new, cached, vocab)
    for row, call in enumerate(calls):
        feats[row, _WORDNET], feats[row, _OPPOSED] = call()
    return pair, feats, vecs


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def logit(
    weights: PairWeights, cosine: float, pair: np.ndarray, feats: np.ndarray, vecs: np.ndarray
) -> float:
    p = pair.copy()
    p[0] = cosine
    z = weights.bias + float(weights.pair @ p)
    if len(feats):
        u = feats @ weights.token + vecs @ weights.vector
        z -= float(_softplus(u).sum())
    return z


def probability(
    new: TokenView,
    cached: TokenView,
    cosine: float,
    vocab: Vocabulary,
    weights: PairWeights | None = None,
    *,
    term_veto: bool = False,
) -> float:
    """P(the cached answer is right for the new prompt), as the model sees it."""
    w = shipped_weights() if weights is None else weights
    pair, feats, vecs = pair_features(new, cached, vocab)
    pair[2] = 1.0 if term_veto else 0.0
    return 1.0 / (1.0 + math.exp(-logit(w, cosine, pair, feats, vecs)))


def _cut(accept: float) -> float:
    return math.log(accept / (1.0 - accept)) if accept < 1.0 else math.inf


def serves(
    new: TokenView,
    cached: TokenView,
    cosine: float,
    vocab: Vocabulary,
    band: Band,
    *,
    term_veto: bool = False,
    weights: PairWeights | None = None,
) -> bool:
    """The band's verdict on a pair: at or above the floor, the prompts align or the pair
    model is confident enough (``band.accept``) that they ask the same thing; below the floor
    (down to ``band.reach``) the pair model alone decides, at ``band.reach_accept``; a pair the
    guard vetoed for a protected term on one side only (``term_veto``,
    :func:`~trioproxy.cache.guard.term_only`) is served only at or above the floor and only on
    the pair model's word, told of the veto, at ``band.term_accept``. The caller has checked
    the guard (every other veto refuses before this)."""
    if term_veto:
        if cosine < band.floor or band.term_accept > 1.0:
            return False
        return _judged(new, cached, cosine, vocab, _cut(band.term_accept), 1.0, weights)
    if cosine < band.floor:
        if band.reach is None or cosine < band.reach or band.reach_accept > 1.0:
            return False
        return _judged(new, cached, cosine, vocab, _cut(band.reach_accept), 0.0, weights)
    if verify(new, cached, vocab, band.align) is None:
        return True
    if band.accept > 1.0:
        return False
    return _judged(new, cached, cosine, vocab, _cut(band.accept), 0.0, weights)


def _judged(
    new: TokenView,
    cached: TokenView,
    cosine: float,
    vocab: Vocabulary,
    need: float,
    term: float,
    weights: PairWeights | None,
) -> bool:
    """The pair model's logit >= ``need`` (``term``: the value of the "term" pair feature)."""
    w = shipped_weights() if weights is None else weights
    pair, feats, vecs, calls = _unfilled(new, cached, vocab)
    p = pair.copy()
    p[0] = cosine
    p[2] = term
    base = w.bias + float(w.pair @ p)
    if not len(feats):
        return base >= need
    # Each piece's penalty lies between its smallest and largest over the two WordNet
    # columns; WordNet is asked piece by piece, most uncertain first, only until the bounds
    # on the logit decide (the verdict is the one the full features give).
    u = feats @ w.token + vecs @ w.vector
    cases = np.stack(
        [u, u + w.token[_WORDNET], u + w.token[_OPPOSED], u + w.token[_WORDNET] + w.token[_OPPOSED]]
    )
    low, high = _softplus(cases.min(axis=0)), _softplus(cases.max(axis=0))
    for row in np.argsort(low - high)[:MAX_LOOKUPS]:
        if base - float(low.sum()) < need:
            return False
        if base - float(high.sum()) >= need:
            return True
        rel, opp = calls[row]()
        exact = _softplus(u[row] + rel * w.token[_WORDNET] + opp * w.token[_OPPOSED])
        low[row] = high[row] = exact
    return base - float(high.sum()) >= need  # undecided after MAX_LOOKUPS: refused


__all__ = [
    "PAIR_FEATURES",
    "TOKEN_FEATURES",
    "PairWeights",
    "logit",
    "pair_features",
    "probability",
    "serves",
    "shipped_weights",
]
