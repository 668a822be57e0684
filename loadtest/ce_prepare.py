"""The cross-encoder's data: every pair of every writer set with what the gateway computes
for it at the default band, written to ``$CE_OUT/pairs.json``.

    .venv-ml/bin/python loadtest/ce_prepare.py        (see ce_minilm.py for the venv)

Data: every writer set of ``semantic_quality.writer_sets``: the project's own sets (tuning
pairs, ``pair_model_extra.json``, the sets held out for the freezes v1-v24; written by the
project, project licence) and GPTCache's pairs (``examples/benchmark/mock_data.json`` of
zilliztech/GPTCache, MIT licence). Per pair: its writer, kind (near, para, nondup), texts, the
cosine of the gateway's quantized embedder (as ``Judge``), the guard's veto, whether that veto
is a one-sided term only (``guard.term_only``), and whether the alignment check passes at the
default band. Runs with the gateway's own code (no torch needed); ~2 minutes.
"""

from __future__ import annotations

import json
import time

from ce_minilm import out_dir
from semantic_quality import Judge, writer_sets

from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss, term_only
from trioproxy.cache.semantic import route_band
from trioproxy.cache.verifier import verify
from trioproxy.config.model import CacheConfig


def main() -> None:
    band = route_band(CacheConfig())
    judge = Judge(OnnxMiniLM())
    t0 = time.time()
    rows = []
    for writer, items in writer_sets().items():
        for kind, p in items:
            cos = judge.cosine(p)
            guard = near_miss(p.new, p.cached)
            a, b = judge.embed(p.new).tokens, judge.embed(p.cached).tokens
            assert a is not None and b is not None
            aligned = guard is None and verify(a, b, judge.vocab, band.align) is None
            rows.append(
                {
                    "writer": writer,
                    "kind": kind,
                    "family": p.family,
                    "new": p.new,
                    "cached": p.cached,
                    "same": p.same,
                    "cos": cos,
                    "guard": guard,
                    "term_only": bool(guard == "term" and term_only(p.new, p.cached)),
                    "aligned": bool(aligned),
                }
            )
    print(len(rows), "pairs in", round(time.time() - t0, 1), "s")
    (out_dir() / "pairs.json").write_text(json.dumps({"band": str(band), "rows": rows}))


if __name__ == "__main__":
    main()
