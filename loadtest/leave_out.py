"""Leave-one-writer-set-out evaluation of the semantic cache's pair judge.

    nice -n 10 .venv/bin/python loadtest/leave_out.py [--leave-out v5 v6 v7 ...] [--baseline-weights FILE]

Every labelled set the project has was written by a different writer
(``semantic_quality.writer_sets``: the tuning sets, the pairs written to train the pair model,
GPTCache's pairs (MIT), and the sets held out for the freezes v1-v7). A set that trained a
model or tuned a cut scores too well on itself, so here each candidate is scored only on a
writer set it was not trained on: for each left-out set, the pair model is trained
(``train_pair_model.train``) on every other set, and the left-out set is decided exactly as
``SemanticCache.lookup`` decides (``semantic_quality.Judge.hit``: floor and reach, guard,
protected-term overrule, alignment, pair model) at the default route settings.

Rows per left-out set: near-miss false hits, same-topic non-duplicate false hits, paraphrase
true hits, for

* ``main v7 recipe``: main before the v8 judge: the default band of FROZEN v7 (floor 0.80,
  align 0.85, cut 0.70, nothing below the floor, every guard veto final) with the pair model
  trained by v7's recipe (guard-passing pairs only, no "term" feature) without the set;
* ``v8 judge``: the shipped default preset (``BAND_PRESETS[0.01]``: also a reach down to 0.75
  at cut 0.90, and a one-sided protected-term veto overruled at 0.90) with the pair model
  trained by the shipped recipe without the set;
* ``--baseline-weights FILE``: v7's band with a fixed weights file (e.g. main's
  ``pair_model.json`` at FROZEN v7, trained on v1-v6: in sample for those).

The guard's word rules cannot be untrained: they were written looking at the sets v1-v6, so v7
is the only one out of sample for the rules too; the others measure the learned part.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from semantic_quality import WRITERS, Judge, cell, writer_sets
from train_pair_model import Row, rows_of, train

from trioproxy.cache.band import BAND_PRESETS, DEFAULT_ALIGN, Band
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.pair_model import PairWeights

V7_BAND = Band(0.80, 1.0, DEFAULT_ALIGN, 0.70)
"""The default preset of FROZEN v7 (main before the v8 judge)."""
KINDS = ("near", "nondup", "para")


def score(judge: Judge, rows: list[Row], band: Band, w: PairWeights) -> dict[str, tuple[int, int]]:
    out = {}
    for kind in KINDS:
        sub = [r for r in rows if r.kind == kind]
        out[kind] = (sum(judge.hit(r.pair, band, weights=w) for r in sub), len(sub))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leave-out", nargs="+", default=list(WRITERS), choices=WRITERS)
    ap.add_argument("--baseline-weights", help="a pair_model.json to score with v7's band too")
    args = ap.parse_args()
    judge = Judge(OnnxMiniLM())
    t0 = time.perf_counter()
    rows = rows_of(judge, writer_sets())
    print(f"{len(rows)} pairs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    fixed = (
        PairWeights.from_json(Path(args.baseline_weights).read_text())
        if args.baseline_weights
        else None
    )
    results: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    for held in args.leave_out:
        rest = [r for r in rows if r.writer != held]
        test = [r for r in rows if r.writer == held]
        runs: list[tuple[str, Band, PairWeights]] = []
        if fixed is not None:
            runs.append((f"fixed {Path(args.baseline_weights).name}, v7 band", V7_BAND, fixed))
        runs.append(("main v7 recipe", V7_BAND, train(rest, term_rows=False)))
        runs.append(("v8 judge", BAND_PRESETS[0.01], train(rest)))
        for name, band, w in runs:
            res = score(judge, test, band, w)
            results.setdefault(name, {})[held] = res
            print(f"{held} {name}: {res}", file=sys.stderr, flush=True)
    print(
        "| candidate | left out | near-miss false hits | non-dup false hits | paraphrase true hits |"
    )
    print("|---|---|---|---|---|")
    for name, per in results.items():
        tot = {k: [0, 0] for k in KINDS}
        for held, res in per.items():
            for k in KINDS:
                tot[k][0] += res[k][0]
                tot[k][1] += res[k][1]
            print(
                f"| {name} | {held} | {cell(*res['near'])} | {res['nondup'][0]}/{res['nondup'][1]}"
                f" | {cell(*res['para'])} |"
            )
        print(
            f"| {name} | **all left out** | {cell(*tot['near'])} | {tot['nondup'][0]}/"
            f"{tot['nondup'][1]} | {cell(*tot['para'])} |"
        )


if __name__ == "__main__":
    main()
