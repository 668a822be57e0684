"""Train the pair model (``trioproxy/cache/pair_model.json``) on the seen pairs.

    nice -n 10 .venv/bin/python loadtest/train_pair_model.py [--write]

Data: every ``tune:``, ``seen:`` and ``extra:`` set of ``semantic_quality.load_sets`` (the
project's own pairs, ``loadtest/data/pair_model_extra.json`` written for this model, and
GPTCache pairs, MIT); never a ``held:`` set. A pair trains the model when it would reach it
at a route: cosine >= ``TRAIN_FLOOR``, no guard veto, and the alignment check at the default
``align`` refuses it. GPTCache pairs weigh ``GPT_WEIGHT`` each (another style than chat
prompts); the two classes weigh the same in total. Full-batch Adam on the logistic loss,
L2 on the weights, deterministic (no sampling): the same data gives the same file.

It first prints a leave-one-set-out table (train without each of v1-v6 in turn, decide that set
as a route would, by the pair model's cut) from which the presets' cuts
(``verifier.BAND_PRESETS``) were chosen, then, with ``--write``, trains on everything and
writes the weights.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from semantic_quality import SEEN, Judge, Pair, load_sets

from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss
from trioproxy.cache.pair_model import TOKEN_FEATURES, PairWeights, pair_features
from trioproxy.cache.verifier import DEFAULT_ALIGN, verify

OUT = Path(__file__).parent.parent / "trioproxy" / "cache" / "pair_model.json"
TRAIN_FLOOR = 0.75
GPT_WEIGHT = 0.3
L2_TOKEN = 1e-3
L2_VECTOR = 1e-2
STEPS = 3000
LR = 0.03
CUTS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(slots=True)
class Row:
    pair: Pair
    source: str
    cosine: float
    in_band: bool
    """Guard passed, cosine >= TRAIN_FLOOR."""
    strict: bool
    """The alignment check at DEFAULT_ALIGN serves it."""
    feats: np.ndarray
    vecs: np.ndarray
    count: float


def rows_of(judge: Judge, sets: dict[str, list[Pair]]) -> list[Row]:
    out = []
    for name, pairs in sets.items():
        if name.startswith("held:"):
            continue
        source = (
            name.split(":")[1].split("_")[0] if name.startswith("seen:v") else name.split(":")[0]
        )
        for p in pairs:
            cos = judge.cosine(p)
            a, b = judge.embed(p.new).tokens, judge.embed(p.cached).tokens
            assert a is not None and b is not None
            in_band = cos >= TRAIN_FLOOR and near_miss(p.new, p.cached) is None
            strict = in_band and verify(a, b, judge.vocab, DEFAULT_ALIGN) is None
            pf, feats, vecs = pair_features(a, b, judge.vocab) if in_band else (None, None, None)
            out.append(
                Row(
                    p,
                    source,
                    cos,
                    in_band,
                    strict,
                    feats,
                    vecs,
                    0.0 if pf is None else float(pf[1]),
                )
            )
    return out


def train(rows: list[Row]) -> PairWeights:
    rows = [r for r in rows if r.in_band and not r.strict]
    n = len(rows)
    P = np.array([[r.cosine, r.count] for r in rows])
    X = np.concatenate([r.feats for r in rows]).astype(np.float64)
    V = np.concatenate([r.vecs for r in rows]).astype(np.float64)
    seg = np.concatenate([np.full(len(r.feats), i) for i, r in enumerate(rows)]).astype(int)
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


def probability(w: PairWeights, r: Row) -> float:
    u = r.feats @ w.token + r.vecs @ w.vector
    z = w.bias + w.pair[0] * r.cosine + w.pair[1] * r.count - float(np.logaddexp(0, u).sum())
    return 1 / (1 + np.exp(-z))


def leave_one_out(rows: list[Row], floor: float = 0.80) -> None:
    print(
        "| held set | cut | false hits (all negatives) | true hits (paraphrases) | families served |"
    )
    print("|---|---|---|---|---|")
    for held, _ in SEEN:
        w = train([r for r in rows if r.source != held])
        test = [r for r in rows if r.source == held]
        neg = sum(not r.pair.same for r in test)
        pos = len(test) - neg
        for cut in ("align only", *CUTS):
            fh = th = 0
            fams: Counter[str] = Counter()
            for r in test:
                if not r.in_band or r.cosine < floor:
                    continue
                hit = r.strict or (cut != "align only" and probability(w, r) >= float(cut))
                th += hit and r.pair.same
                if hit and not r.pair.same:
                    fh += 1
                    fams[r.pair.family] += 1
            print(f"| {held} | {cut} | {fh}/{neg} | {th}/{pos} | {dict(fams) or ''} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help=f"train on all and write {OUT.name}")
    args = ap.parse_args()
    judge = Judge(OnnxMiniLM())
    rows = rows_of(judge, load_sets())
    used = [r for r in rows if r.in_band and not r.strict]
    print(
        f"{len(rows)} seen pairs, {len(used)} train the model "
        f"({sum(r.pair.same for r in used)} same answer); token features {TOKEN_FEATURES}"
    )
    leave_one_out(rows)
    if args.write:
        OUT.write_text(train(rows).to_json() + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
