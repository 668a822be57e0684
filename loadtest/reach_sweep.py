"""How far below the floor the semantic cache could serve on the pair model's word.

    nice -n 10 .venv/bin/python loadtest/reach_sweep.py [--train-floor 0.60] [--leave-out v8 ... v13]

The leave-one-writer-set-out procedure of ``leave_out.py`` (each set in ``--leave-out`` is
scored by a pair model trained on every other writer set), for the default preset with its
reach (the lowest cosine served when the pair model is at least ``reach_accept`` sure) and the
pair model's training floor (``train_pair_model.TRAIN_FLOOR``) varied. Prints the pooled
near-miss, non-duplicate and paraphrase counts per (training floor, reach) row. About 4
minutes for six sets.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import train_pair_model as tpm
from leave_out import KINDS, score
from semantic_quality import WRITERS, Judge, cell, writer_sets

from trioproxy.cache.band import BAND_PRESETS
from trioproxy.cache.embedder import OnnxMiniLM

REACHES = ((0.70, 0.90), (0.70, 0.95), (0.65, 0.95), (0.65, 0.98), (0.60, 0.98))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-floor", type=float, default=0.60)
    ap.add_argument("--leave-out", nargs="+", choices=WRITERS,
                    default=["v8", "v9", "v10", "v11", "v12", "v13"])  # fmt: skip
    args = ap.parse_args()
    shipped_floor = tpm.TRAIN_FLOOR
    low = min(args.train_floor, shipped_floor)
    tpm.TRAIN_FLOOR = low  # features for every row the lower training floor may use
    judge = Judge(OnnxMiniLM())
    t0 = time.perf_counter()
    rows = tpm.rows_of(judge, writer_sets())
    print(f"{len(rows)} pairs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    base = BAND_PRESETS[0.01]
    bands = {f"{base.reach} at {base.reach_accept} (shipped)": base}
    for reach, accept in REACHES:
        bands[f"{reach} at {accept}"] = replace(base, reach=reach, reach_accept=accept)
    tot: dict[tuple[float, str, str], list[int]] = {}
    floors = (shipped_floor, args.train_floor)
    for train_floor in floors:
        tpm.TRAIN_FLOOR = train_floor
        for held in args.leave_out:
            weights = tpm.train([r for r in rows if r.writer != held])
            test = [r for r in rows if r.writer == held]
            for name, band in bands.items():
                for kind, (hits, n) in score(judge, test, band, weights).items():
                    t = tot.setdefault((train_floor, name, kind), [0, 0])
                    t[0] += hits
                    t[1] += n
            print(f"trained on >= {train_floor}, {held} left out", file=sys.stderr, flush=True)
    print("| pair model trained on cosine >= | reach (at model >=) | near-misses | non-dups "
          "| paraphrases |\n|---|---|---|---|---|")  # fmt: skip
    for train_floor in floors:
        for name in bands:
            near, nondup, para = (tot[(train_floor, name, k)] for k in KINDS)
            print(f"| {train_floor} | {name} | {cell(*near)} | {nondup[0]}/{nondup[1]} "
                  f"| {cell(*para)} |")  # fmt: skip


if __name__ == "__main__":
    main()
