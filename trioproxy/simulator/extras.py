"""The simulator's non-chat endpoints: OpenAI embeddings and Anthropic token counting.

``POST /v1/embeddings`` answers deterministic unit vectors: each input's vector
is a function of its text (or token ids) and ``dimensions`` only, so a test can
compare two answers byte for byte. Usage counts the estimator's tokens of each
text (one per id for pre-tokenized input).

``POST /v1/messages/count_tokens`` answers ``{"input_tokens": n}`` with the same
count the simulator bills for a ``/v1/messages`` request with that body.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from trioproxy.core.tokens import estimate_tokens, prompt_tokens
from trioproxy.simulator.plan import BadRequest, checked_messages, checked_model, odd_counts

EMBEDDINGS_PATH = "/v1/embeddings"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
DEFAULT_DIMENSIONS = 64
MAX_DIMENSIONS = 3072


def _inputs(value: Any) -> list[str | list[int]]:
    """The inputs as texts or token-id lists; raises :class:`BadRequest`."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value):
            return list(value)
    raise BadRequest("input: must be a string, an array of strings or of token arrays")


def vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector for one input."""
    seed = item if isinstance(item, str) else ",".join(map(str, item))
    rng = random.Random(zlib.crc32(seed.encode("utf-8", "replace")) ^ dimensions)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def embeddings_body(body: Any, *, odd_usage: str | None = None) -> bytes:
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    model = checked_model(body)
    inputs = _inputs(body.get("input"))
    dims = body.get("dimensions", DEFAULT_DIMENSIONS)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS:
        raise BadRequest(f"dimensions: must be an integer from 1 to {MAX_DIMENSIONS}")
    tokens = sum(estimate_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
    data = [
        {"object": "embedding", "index": n, "embedding": vector(item, dims)}
        for n, item in enumerate(inputs)
    ]
    usage = odd_counts({"prompt_tokens": tokens, "total_tokens": tokens}, odd_usage)
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


def count_tokens_body(body: Any, *, odd_usage: str | None = None) -> bytes:
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    checked_model(body)
    messages = checked_messages(body)
    system = body.get("system")
    counted = [{"role": "system", "content": system}, *messages] if system else messages
    return orjson.dumps(odd_counts({"input_tokens": prompt_tokens(counted)}, odd_usage))


__all__ = [
    "COUNT_TOKENS_PATH",
    "EMBEDDINGS_PATH",
    "count_tokens_body",
    "embeddings_body",
    "vector",
]
