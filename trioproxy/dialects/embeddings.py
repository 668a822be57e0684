"""The OpenAI embeddings dialect (``POST /v1/embeddings``): validation only.

The caller's body goes upstream as sent (with the deployment's model name), so
fields we do not model (``encoding_format``, ``dimensions``, ...) still reach
the provider. What the gateway needs for budgets and the cache is computed
here: an upper bound and an estimate of the input tokens. Errors use the
OpenAI envelope (:func:`trioproxy.dialects.openai.render_error`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trioproxy.core.tokens import estimate_tokens, max_tokens_bound
from trioproxy.dialects import _fields as f
from trioproxy.errors import invalid

MAX_INPUTS = 2048
"""OpenAI's own limit on the number of inputs of one request."""
_FORMATS = ("float", "base64")


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    body: dict[str, Any]
    model: str
    inputs: int
    """How many inputs (vectors in the answer)."""
    prompt_bound: int
    """Upper bound of the input tokens (any byte-level BPE): the budget reservation."""
    prompt_estimate: int
    end_user: str | None = None


def _input_tokens(value: Any) -> tuple[int, int, int]:
    """(inputs, bound, estimate) of ``input``; raises ``CallerError``."""
    if isinstance(value, str):
        return 1, max_tokens_bound(value), estimate_tokens(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            bound = sum(max_tokens_bound(v) for v in value)
            return len(value), bound, sum(estimate_tokens(v) for v in value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return 1, len(value), len(value)
        if all(isinstance(v, list) and v and all(isinstance(i, int) for i in v) for v in value):
            n = sum(len(v) for v in value)
            return len(value), n, n
    raise invalid(
        "'input' must be a non-empty string, or a non-empty array of strings, "
        "of token ids, or of token-id arrays",
        "input",
    )


def parse_request(body: bytes) -> EmbeddingRequest:
    data = f.load_object(body)
    model = f.req_str(data, "model")
    inputs, bound, estimate = _input_tokens(data.get("input"))
    if inputs > MAX_INPUTS:
        raise invalid(f"'input' may hold at most {MAX_INPUTS} items", "input")
    if isinstance(data.get("input"), str) and not data["input"]:
        raise invalid("'input' must not be empty", "input")
    fmt = f.opt_str(data, "encoding_format")
    if fmt is not None and fmt not in _FORMATS:
        raise invalid(f"'encoding_format' must be one of {list(_FORMATS)}", "encoding_format")
    f.opt_pos_int(data, "dimensions")
    end_user = f.end_user(data, "user")
    return EmbeddingRequest(data, model, inputs, bound, estimate, end_user)


__all__ = ["MAX_INPUTS", "EmbeddingRequest", "parse_request"]
