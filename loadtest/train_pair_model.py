"""Train the pair model (``trioproxy/cache/pair_model.json``) on every labelled set.

    nice -n 10 .venv/bin/python loadtest/train_pair_model.py [--write]

Data: every writer set of ``semantic_quality.writer_sets`` (the project's tuning sets, the
sets held out for the freezes v1-v18, ``loadtest/data/pair_model_extra.json`` written for this
model: all written by the project, project licence; and GPTCache's pairs, MIT); never a set
held out for the next freeze. A pair trains the model when it can reach it at a route:
cosine >= ``TRAIN_FLOOR`` and either the guard lets it through and the alignment check at the
default ``align`` refuses it, or the guard's only veto is a protected term on one side
(:func:`~trioproxy.cache.guard.term_only`; the pair feature "term" is 1 for those). GPTCache
pairs weigh ``GPT_WEIGHT`` each (another style than chat prompts); the two classes weigh the
same in total. Full-batch Adam on the logistic loss, L2 on the weights, deterministic (no
sampling): the same data gives the same file.

The presets' cuts (``band.BAND_PRESETS``) were chosen from the leave-one-writer-set-out
table of ``loadtest/leave_out.py``, which trains this recipe without each set in turn.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from semantic_quality import Judge, Pair, writer_sets

from trioproxy.cache.band import DEFAULT_ALIGN
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss, term_only
from trioproxy.cache.pair_model import TOKEN_FEATURES, PairWeights, pair_features
from trioproxy.cache.verifier import verify

OUT = Path(__file__).parent.parent / "trioproxy" / "cache" / "pair_model.json"
TRAIN_FLOOR = 0.75
GPT_WEIGHT = 0.3
L2_TOKEN = 1e-3
L2_VECTOR = 1e-2
STEPS = 3000
LR = 0.03


@dataclass(slots=True)
class Row:
    pair: Pair
    writer: str
    kind: str
    """near, para or nondup."""
    cosine: float
    guard: str | None
    """The guard's veto (``near_miss``), or None."""
    term: bool
    """The veto is a protected term on one side only, nothing else (``term_only``)."""
    strict: bool
    """The guard lets it through and the alignment check at DEFAULT_ALIGN serves it."""
    feats: np.ndarray | None
    vecs: np.ndarray | None
    count: float


def rows_of(judge: Judge, sets: dict[str, list[tuple[str, Pair]]]) -> list[Row]:
    """Every pair of every writer set (``writer -> [(kind, pair)]``), with what the training
    and the leave-one-out evaluation need."""
    out = []
    for writer, items in sets.items():
        for kind, p in items:
            cos = judge.cosine(p)
            a, b = judge.embed(p.new).tokens, judge.embed(p.cached).tokens
            assert a is not None and b is not None
            guard = near_miss(p.new, p.cached)
            term = guard == "term" and term_only(p.new, p.cached)
            strict = guard is None and verify(a, b, judge.vocab, DEFAULT_ALIGN) is None
            pf, feats, vecs = (
                pair_features(a, b, judge.vocab) if cos >= TRAIN_FLOOR else (None, None, None)
            )
            count = 0.0 if pf is None else float(pf[1])
            out.append(Row(p, writer, kind, cos, guard, term, strict, feats, vecs, count))
    return out


def trains(r: Row, *, term_rows: bool = True) -> bool:
    """The row is one the model learns from."""
    if r.cosine < TRAIN_FLOOR or r.feats is None:
        return False
    return (r.guard is None and not r.strict) or (term_rows and r.term)


def train(rows: list[Row], *, term_rows: bool = True) -> PairWeights:
    """The pair model on ``rows`` (``term_rows`` False: main's v7 recipe, without the
    protected-term rows and their feature)."""
    rows = [r for r in rows if trains(r, term_rows=term_rows)]
    n = len(rows)
    P = np.array([[r.cosine, r.count, 1.0 if r.term else 0.0] for r in rows])
    X = np.concatenate([r.feats for r in rows if r.feats is not None]).astype(np.float64)
    V = np.concatenate([r.vecs for r in rows if r.vecs is not None]).astype(np.float64)
    seg = np.concatenate(
        [np.full(len(r.feats), i) for i, r in enumerate(rows) if r.feats is not None]
    ).astype(int)
    y = np.array([1.0 if r.pair.same else 0.0 for r in rows])
    w = np.array([GPT_WEIGHT if r.pair.family == "gptcache" else 1.0 for r in rows])
    w = np.where(y == 1, w / (w * y).sum(), w / (w * (1 - y)).sum()) * n / 2
    params = [np.zeros(1), np.zeros(P.shape[1]), np.zeros(X.shape[1]), np.zeros(V.shape[1])]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    for it in range(1, STEPS + 1):
        b, wp, wt, wv = params
        u = X @ wt + V @ wv
        z = b[0] + P @ wp - np.bincount(seg, np.logaddexp(0, u), minlength=n)
        g = w * (1 / (1 + np.exp(-z)) - y) / n
        gu = -g[seg] / (1 + np.exp(-u))
        grads = [np.array([g.sum()]), P.T @ g, X.T @ gu + L2_TOKEN * wt, V.T @ gu + L2_VECTOR * wv]
        for k in range(4):
            m1[k] = 0.9 * m1[k] + 0.1 * grads[k]
            m2[k] = 0.999 * m2[k] + 0.001 * grads[k] ** 2
            step = (m1[k] / (1 - 0.9**it)) / (np.sqrt(m2[k] / (1 - 0.999**it)) + 1e-8)
            params[k] -= LR * step
    b, wp, wt, wv = params
    return PairWeights(
        float(b[0]), wp.astype(np.float32), wt.astype(np.float32), wv.astype(np.float32)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help=f"train on all and write {OUT.name}")
    args = ap.parse_args()
    judge = Judge(OnnxMiniLM())
    rows = rows_of(judge, writer_sets())
    used = [r for r in rows if trains(r)]
    print(
        f"{len(rows)} pairs, {len(used)} train the model ({sum(r.pair.same for r in used)} same "
        f"answer, {sum(r.term for r in used)} protected-term vetoes); token features "
        f"{TOKEN_FEATURES}"
    )
    if args.write:
        OUT.write_text(train(rows).to_json() + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
