"""OpenAI embeddings upstream (``POST /v1/embeddings``; kinds ``openai`` and
``openai_compatible``). Pure: the caller's body with the deployment's model
name in, the provider's body and its usage out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trioproxy.core.usage import token_count
from trioproxy.providers.base import UpstreamRequest, bearer, json_object, json_request

PATH = "/v1/embeddings"


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    body: dict[str, Any]
    """The provider's JSON, relayed to the caller (its ``model`` is the caller's name)."""
    input_tokens: int
    estimated: bool = False
    """True when the provider sent no usage and the count is the gateway's estimate."""


def build_request(body: dict[str, Any], deployment: str, api_key: str | None) -> UpstreamRequest:
    return json_request(PATH, {**body, "model": deployment}, *bearer(api_key))


def parse_response(body: bytes, *, estimate: int) -> EmbeddingResult:
    """Parse a 2xx body; raises ``ValueError`` on anything but an embeddings list, and on a
    ``usage.prompt_tokens`` that is there but no count (:func:`~trioproxy.core.usage.token_count`).
    Without one, the count is ``estimate``."""
    data = json_object(body)
    if not isinstance(data.get("data"), list):
        raise ValueError("response has no 'data' list")
    usage = data.get("usage")
    if not isinstance(usage, dict) or usage.get("prompt_tokens") is None:
        return EmbeddingResult(data, estimate, estimated=True)
    return EmbeddingResult(data, token_count(usage, "prompt_tokens"))


__all__ = ["PATH", "EmbeddingResult", "build_request", "parse_response"]
