"""Export the trained cross-encoder (``$CE_OUT/ce.pt``) to ONNX, fold it (onnxruntime's basic
optimizations) and quantize it dynamically to int8 as ``trioproxy/cache/model_file.py`` does
the embedder (QInt8, per channel, reduced range); compare float and int8 verdicts on the held
pairs the cache reaches; time one pair on one thread.

    .venv-ml/bin/python loadtest/ce_export.py            (see ce_minilm.py for the venv)
    cp loadtest/results/ce/ce_int8.onnx trioproxy/cache/pair_cross_encoder.onnx

The shipped file (FROZEN v25) came from torch 2.13.0, onnx 1.23.2, onnxruntime 1.32.0 (opset
17, 22.9 MB). Writes ``ce_f32.onnx``, ``ce_folded.onnx``, ``ce_int8.onnx`` and
``ce_int8_scores.json`` (each reached held pair scored as the gateway does:
``trioproxy.cache.cross_encoder.score``, both orders in one run) for ``ce_eval.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ce_minilm import HOLD, REACH, CrossEncoder, load_bert, out_dir, pair_ids

CUTS = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


def session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def both(sess: Any, a: str, b: str) -> float:
    """Mean logit of both orders, one run (a batch of two), as the gateway scores a pair."""
    rows = [pair_ids(a, b), pair_ids(b, a)]
    n = max(len(i) for i, _ in rows)
    ids, tt, mask = (np.zeros((2, n), dtype=np.int64) for _ in range(3))
    for r, (i, t) in enumerate(rows):
        ids[r, : len(i)], tt[r, : len(t)], mask[r, : len(i)] = i, t, 1
    (out,) = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt})
    return float(np.mean(out))


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(2)
    out = out_dir()
    model = CrossEncoder(load_bert())
    model.load_state_dict(torch.load(out / "ce.pt"))
    model.eval()
    f32, folded, q8 = out / "ce_f32.onnx", out / "ce_folded.onnx", out / "ce_int8.onnx"
    ids, tt = pair_ids("how do I reverse a list in python", "reverse a python list")
    x = (torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([tt]))
    names = ("input_ids", "attention_mask", "token_type_ids")
    torch.onnx.export(
        model,
        x,
        str(f32),
        input_names=list(names),
        output_names=["logit"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={k: {0: "batch", 1: "seq"} for k in names} | {"logit": {0: "batch"}},
    )
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    o.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(f32), o, providers=["CPUExecutionProvider"])
    quantize_dynamic(folded, q8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    for p in (f32, q8):
        print(f"{p.name}: {p.stat().st_size / 1e6:.1f} MB")
    rows = json.loads((out / "pairs.json").read_text())["rows"]
    val = [r for r in rows if r["writer"] in HOLD]
    reach = [r for r in val if r["cos"] >= REACH]
    sf, sq = session(f32), session(q8)
    lf = np.array([both(sf, r["new"], r["cached"]) for r in reach])
    lq = np.array([both(sq, r["new"], r["cached"]) for r in reach])
    diff = np.abs(lq - lf)
    print(f"{len(reach)} reached held pairs: |int8 - float| mean {diff.mean():.3f}, max {diff.max():.3f}")  # fmt: skip
    for c in CUTS:
        print(f"  cut {c}: float and int8 agree on {int(((lf >= c) == (lq >= c)).sum())}/{len(reach)}")  # fmt: skip
    it = iter(lq.tolist())
    full = [next(it) if r["cos"] >= REACH else None for r in val]
    (out / "ce_int8_scores.json").write_text(json.dumps({"scores": full}))
    ms = []
    for r in reach[:220]:
        t0 = time.perf_counter()
        both(sq, r["new"], r["cached"])
        ms.append(1000 * (time.perf_counter() - t0))
    ms = sorted(ms[20:])
    print(f"int8, 1 thread, both orders in one run: p50 {ms[len(ms) // 2]:.2f} ms")


if __name__ == "__main__":
    main()
