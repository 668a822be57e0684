"""The pair cross-encoder: the verifier's decider where the alignment check does not serve.

A band hit that the guard lets through and the alignment check
(:func:`~trioproxy.cache.verifier.verify`) does not serve is decided by a cross-encoder: the
shipped MiniLM-L6 (all-MiniLM-L6-v2, Apache-2.0, the embedder's own model) fine-tuned to read
both prompts at once, "[CLS] new [SEP] cached [SEP]" (token types 0 / 1, at most
:data:`MAX_LEN` word pieces, the longer side cut first), a linear head on [CLS] giving one
logit. Its score of a pair is the mean logit of both orders, computed in one
``session.run`` (a batch of two); the pair is served when the score is at least the band's
``cut`` (:class:`~trioproxy.cache.band.Band`). The file ``pair_cross_encoder.onnx`` (23 MB,
its MatMuls quantized dynamically to int8 as :mod:`~trioproxy.cache.model_file` quantizes the
embedder) is trained and exported by ``loadtest/train_cross_encoder.py`` and
``loadtest/ce_export.py`` on the project's own pair sets (project licence) and GPTCache's
pairs (MIT); nothing else.

The policy (:func:`serves`), as ``loadtest/ce_eval.py`` measured it ("guard + align + CE"):
the guard's vetoes stay vetoes, but one for a protected term on one side only
(:func:`~trioproxy.cache.guard.term_only`) is overruled at or above the floor when the score
reaches the band's stricter ``term_cut`` (:data:`~trioproxy.cache.band.TERM_CUT`, 5, where
the band allows it); at or above the floor a pair the alignment passes is served without the
model; otherwise the cross-encoder decides at ``cut``, down to the band's ``reach``. On
v20-v24 (not trained on) at cut 1: near-miss false hits 1/1,120 (the pair model: 8),
non-dups 2/400 (1), paraphrases served 607/800 (555) (``loadtest/README.md``, v25).

The ONNX session is loaded once per process, lazily (by the first pair that needs it, in
the thread that scores it), on one thread without spin-waiting, like the embedder's; it
stays for the process's life (the 23 MB file's weights and run buffers). :func:`score` blocks for a model run (~10-20 ms on a
loaded 2-core box): the cache calls it in a worker thread (``trio.to_thread``), never on the
event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from trioproxy.cache.band import Band
from trioproxy.cache.embedder import blingfire_tokenizer
from trioproxy.cache.verifier import verify
from trioproxy.cache.vocabulary import TokenView, Vocabulary

MODEL_FILE = "pair_cross_encoder.onnx"
MAX_LEN = 64
"""Word pieces of a pair, [CLS] and both [SEP] included (the training's length)."""
_CLS, _SEP = 101, 102

_lock = threading.Lock()
_session: Any = None
_tokenize: Callable[[str], list[int]] | None = None


def _load() -> tuple[Any, Callable[[str], list[int]]]:
    """The process's session and tokenizer, loaded by the first caller (blocking)."""
    global _session, _tokenize
    with _lock:
        if _session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.enable_cpu_mem_arena = False
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # no second, prepacked copy of the weights: +22 MB of RSS instead of +49 once
            # loaded, the same scores to the last bit (375 pairs of v20-v24), ~+0.8 ms a run
            opts.add_session_config_entry("session.disable_prepacking", "1")
            path = resources.files("trioproxy.cache").joinpath(MODEL_FILE)
            with resources.as_file(path) as file:
                _session = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
            _tokenize = blingfire_tokenizer()
        assert _tokenize is not None
        return _session, _tokenize


def pair_ids(x: list[int], y: list[int]) -> tuple[list[int], list[int]]:
    """ "[CLS] x [SEP] y [SEP]" and its token types, the longer side cut first to fit."""
    budget = MAX_LEN - 3
    while len(x) + len(y) > budget:
        if len(x) >= len(y):
            x = x[:-1]
        else:
            y = y[:-1]
    return [_CLS, *x, _SEP, *y, _SEP], [0] * (len(x) + 2) + [1] * (len(y) + 1)


def score(new: str, cached: str) -> float:
    """The mean of the cross-encoder's logits for both orders of the pair (one run, a padded
    batch of two). Blocking: call it off the event loop."""
    session, tokenize = _load()
    a, b = tokenize(new), tokenize(cached)
    rows = [pair_ids(a, b), pair_ids(b, a)]
    width = max(len(ids) for ids, _ in rows)
    ids = np.zeros((2, width), dtype=np.int64)
    types = np.zeros((2, width), dtype=np.int64)
    mask = np.zeros((2, width), dtype=np.int64)
    for r, (i, t) in enumerate(rows):
        ids[r, : len(i)] = i
        types[r, : len(t)] = t
        mask[r, : len(i)] = 1
    (logits,) = session.run(
        ["logit"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    )
    return float(np.asarray(logits, dtype=np.float64).reshape(-1).mean())


def without_model(
    new: TokenView,
    cached: TokenView,
    cosine: float,
    vocab: Vocabulary,
    band: Band,
    *,
    term_veto: bool = False,
) -> bool | None:
    """The verdict when the cross-encoder need not run, else None (it decides at
    ``band.cut``). ``term_veto``: the guard vetoed the pair for a protected term on one side
    only; the caller has checked the guard (every other veto refuses before this)."""
    if term_veto:
        return None if band.term_overrule and cosine >= band.floor else False
    if cosine < band.floor:
        reached = band.reach is not None and cosine >= band.reach
        return None if reached and band.judges else False
    if verify(new, cached, vocab, band.align) is None:
        return True
    return None if band.judges else False


def serves(
    new_text: str,
    cached_text: str,
    new: TokenView,
    cached: TokenView,
    cosine: float,
    vocab: Vocabulary,
    band: Band,
    *,
    term_veto: bool = False,
) -> bool:
    """The band's verdict on a pair (:func:`without_model`, else the cross-encoder's score
    >= :func:`needed`), in this thread: for tools; the cache runs the model in a worker thread."""
    verdict = without_model(new, cached, cosine, vocab, band, term_veto=term_veto)
    if verdict is not None:
        return verdict
    return score(new_text, cached_text) >= needed(band, term_veto=term_veto)


def needed(band: Band, *, term_veto: bool = False) -> float:
    """The score the cross-encoder must reach: ``band.cut``, and for a pair the guard vetoed
    for a one-sided protected term also ``band.term_cut``."""
    return max(band.cut, band.term_cut) if term_veto else band.cut


__all__ = ["MAX_LEN", "MODEL_FILE", "needed", "pair_ids", "score", "serves", "without_model"]
