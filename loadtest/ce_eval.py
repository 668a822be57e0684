"""The cross-encoder on the held sets v20-v24 (never trained on), against the policies it could
replace, from ``$CE_OUT/pairs.json`` and a scores file (default ``ce_int8_scores.json``).

    .venv-ml/bin/python loadtest/ce_eval.py [scores.json] [--per-set]

Only pairs the cache reaches are candidates: cosine (the gateway's quantized embedder) >= 0.75,
the default band's reach (floor 0.80). Policies (``guard`` = ``guard.near_miss``; a term-only
veto is ``guard.term_only``; ``aligned`` = the alignment check passes at the default band):

  current code  the verdict stored in ``pairs.json`` as ``base`` when it was prepared by the
                code before FROZEN v25 (guard + alignment + pair model, its reach and term
                overrule, as ``semantic_quality.Judge.hit``); skipped when absent
  CE            cos >= 0.75 and CE >= cut (no guard)
  G+CE          the guard vetoes (a term-only veto is overruled at cos >= floor when
                CE >= cut), else cos >= 0.75 and CE >= cut
  G+A+CE        as G+CE, but a pair the alignment passes at cos >= floor is served without
                the CE: the policy shipped in FROZEN v25
                (``trioproxy.cache.cross_encoder.serves``), there with the term-only
                overrule at the stricter ``band.TERM_CUT``: printed too

Counts are over every pair of the kind in v20-v24 (an unreached pair is never served).
Data: the project's own sets (project licence) and GPTCache's pairs (MIT), via ``ce_prepare.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from ce_minilm import FLOOR, HOLD, REACH, out_dir

from trioproxy.cache.band import TERM_CUT

Row = dict[str, Any]
KINDS = ("near", "para", "nondup")
CUTS = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)


def held_rows(scores: str) -> list[Row]:
    out = out_dir()
    rows = json.loads((out / "pairs.json").read_text())["rows"]
    val = [r for r in rows if r["writer"] in HOLD]
    got = json.loads((out / scores).read_text())["scores"]
    assert len(got) == len(val)
    for r, s in zip(val, got, strict=True):
        r["ce"] = s
    return val


def guard_ok(r: Row, cut: float) -> bool:
    if r["guard"] is None:
        return True
    return bool(r["term_only"]) and r["cos"] >= FLOOR and r["ce"] >= cut


def shipped(r: Row, cut: float, term_cut: float | None = None) -> bool:
    """G+A+CE; ``term_cut``: the term-only overrule's own cut (None: ``cut``)."""
    if r["cos"] < REACH or not guard_ok(r, cut if term_cut is None else max(cut, term_cut)):
        return False
    return (r["cos"] >= FLOOR and r["guard"] is None and r["aligned"]) or r["ce"] >= cut


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    val = held_rows(args[0] if args else "ce_int8_scores.json")
    n = {k: sum(r["kind"] == k for r in val) for k in KINDS}

    def line(label: str, f: Callable[[Row], bool]) -> None:
        c = {k: sum(1 for r in val if r["kind"] == k and f(r)) for k in KINDS}
        print(
            f"| {label} | {c['near']}/{n['near']} ({100 * c['near'] / n['near']:.1f} %) "
            f"| {c['nondup']}/{n['nondup']} | {c['para']}/{n['para']} "
            f"({100 * c['para'] / n['para']:.1f} %) |"
        )

    print("| policy | near-miss false hits | nondup false hits | paraphrases served |")
    print("|---|---|---|---|")
    if "base" in val[0]:
        line("current code (before v25, default band 0.01)", lambda r: bool(r["base"]))
    line("guard + alignment only", lambda r: r["cos"] >= FLOOR and bool(r["aligned"]))
    for cut in CUTS:
        line(f"CE alone, cut {cut}", lambda r, c=cut: r["cos"] >= REACH and r["ce"] >= c)
    for cut in CUTS:
        line(
            f"guard + CE, cut {cut}",
            lambda r, c=cut: r["cos"] >= REACH and guard_ok(r, c) and r["ce"] >= c,
        )
    for cut in CUTS:
        line(f"guard + align + CE, cut {cut}", lambda r, c=cut: shipped(r, c))
    line(f"guard + align + CE, cut 1, term cut {TERM_CUT} (shipped)", lambda r: shipped(r, 1.0, TERM_CUT))  # fmt: skip
    pos = np.array([r["ce"] for r in val if r["cos"] >= REACH and r["kind"] == "para"])
    neg = np.array([r["ce"] for r in val if r["cos"] >= REACH and r["kind"] != "para"])
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    print(f"\nCE AUC on reached held pairs (para vs near + nondup): {auc:.4f}")
    if "--per-set" in sys.argv:
        print("\n| set | near / nondup / para at cut 1, term cut 5 |\n|---|---|")
        for w in HOLD:
            s = [r for r in val if r["writer"] == w]
            cnt = " / ".join(
                f"{sum(1 for r in s if r['kind'] == k and shipped(r, 1.0, TERM_CUT))}"
                f"/{sum(1 for r in s if r['kind'] == k)}"
                for k in ("near", "nondup", "para")
            )
            print(f"| {w} | {cnt} |")


if __name__ == "__main__":
    main()
