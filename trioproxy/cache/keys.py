"""Cache keys, semantic namespaces and the share-safety rule. Pure: no I/O, no clock.

Everything reads ``ChatRequest.chat`` (the canonical OpenAI-form request), so an OpenAI
caller and an Anthropic caller asking the same thing share entries: the stored
:class:`~trioproxy.cache.entry.CacheEntry` is dialect-free and rendered per caller.

* exact key: ``<namespace>:<sha256 of the canonical JSON of every answer-changing field>``
* namespace: a digest of the tenant scope (``team:<name>`` or ``global``) and the route,
  so that ``flush_namespace`` and Redis ``SCAN MATCH`` need no escaping.
* semantic namespace: tenant scope + route + system-prompt digest + earlier-turns digest +
  parameter bucket (temperature, max_tokens, tools, response format, other knobs).
* semantic text: the final user turn; earlier turns only enter through the namespace, so a
  semantic hit always has exactly the same context.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import orjson

from trioproxy.config.model import CacheConfig
from trioproxy.core.tokens import content_text
from trioproxy.core.types import ChatRequest, Dialect
from trioproxy.dialects import anthropic, responses

ANSWER_FIELDS: tuple[str, ...] = (
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "stop",
    "seed",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
)
"""Fields of ``chat`` that change the answer. ``stream``/``user``/metadata do not."""

NEUTRAL_FIELDS: frozenset[str] = frozenset(
    {
        "model",  # the key names the route instead
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "cache_ttl",
    }
)
"""Body fields, in any dialect, that shape delivery, storage or accounting, not the answer."""

TRANSLATED_FIELDS: dict[Dialect, frozenset[str]] = {
    "openai": frozenset(ANSWER_FIELDS),
    "anthropic": frozenset(
        "messages system max_tokens temperature top_p stop_sequences tools tool_choice".split()
    ),
    "responses": frozenset(
        "input instructions max_output_tokens temperature top_p parallel_tool_calls tools "
        "tool_choice".split()
    ),
}
"""Body fields, per caller dialect, whose meaning the key reads from ``chat`` (translated)."""


def unmodelled(req: ChatRequest) -> dict[str, Any]:
    """The caller's body fields the key does not read from ``chat`` and that may change the
    answer: a field passed on to the provider (OpenAI's ``verbosity`` or ``modalities``,
    Anthropic's ``thinking`` or ``top_k``, the Responses API's ``text``), or one the gateway
    does not know yet. Empty for a request of only modelled fields (so callers of different
    dialects asking the same thing still share entries)."""
    translated = TRANSLATED_FIELDS[req.dialect]
    return {
        k: v
        for k, v in req.body.items()
        if v is not None and k not in translated and k not in NEUTRAL_FIELDS
    }


DEFAULT_TEMPERATURE = 1.0
"""What OpenAI and Anthropic use when the request names no temperature."""

_TEMPERATURE_BUCKETS: tuple[float, ...] = (0.0, 0.3, 0.7, 1.0, 2.0)
_MAX_TOKENS_BUCKETS: tuple[int, ...] = (64, 256, 1024, 4096, 16384)


def _digest(value: Any, size: int = 16) -> str:
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:size]


def tenant_scope(team: str, cfg: CacheConfig) -> str:
    return "global" if cfg.scope == "global" else f"team:{team}"


def exact_namespace(scope: str, route: str) -> str:
    """The exact-cache namespace of a tenant scope and route (16 hex chars)."""
    return "x" + _digest(["exact", scope, route], 15)


def dropped(req: ChatRequest) -> list[Any]:
    """What the caller sent that the chat form leaves out and the provider still reads
    (images in tool results, thinking or reasoning items): it keys the answer too (two
    requests that differed only in a tool result's image shared an entry)."""
    if req.dialect == "anthropic":
        return anthropic.dropped_from_chat(req.body)
    if req.dialect == "responses":
        return responses.dropped_from_chat(req.body)
    return []


def _value(v: Any) -> Any:
    """A parameter as JSON reads it: ``0.0`` is ``0`` (JSON has one number zero; a Python
    client sends ``0.0`` where a JavaScript one sends ``0``), within 2**53 (exact either way)."""
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53:
        return int(v)
    return v


def exact_key(req: ChatRequest, scope: str, route: str, owner: str = "") -> str:
    """``<namespace>:<sha256>`` over the canonical answer-changing fields; with ``owner``
    (a key digest, when the route wants confirmation) the entry is that key's alone."""
    chat = req.chat
    fields = {name: _value(chat[name]) for name in ANSWER_FIELDS if chat.get(name) is not None}
    fields["model"] = route
    if owner:
        fields["owner"] = owner
    if extra := unmodelled(req):
        fields["~body"] = [req.dialect, extra]  # ("~": no chat field is named so)
    if left_out := dropped(req):
        fields["~dropped"] = left_out
    if betas := beta_features(req):
        fields["~beta"] = betas
    if req.chain:  # another chain of the route answers with other models
        fields["~chain"] = req.chain
    raw = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return f"{exact_namespace(scope, route)}:{hashlib.sha256(raw).hexdigest()}"


def beta_features(req: ChatRequest) -> list[str]:
    """The caller's ``anthropic-beta`` values, in one order: features that change what the
    model answers (interleaved thinking, a longer output, a larger context), so they key the
    answer like a body field (two requests that differed only in them shared an entry)."""
    return sorted(set(req.anthropic_beta))


EMBEDDING_NEUTRAL: frozenset[str] = frozenset(("model", "user"))
"""Fields of an embeddings request that do not (the model is the route's: keyed as such)."""


def embedding_key(body: Mapping[str, Any], scope: str, route: str, chain: str = "") -> str:
    """``<namespace>:<sha256>`` of an embeddings request (same namespace as the route): every
    field the body sends upstream but the model and the end user, so a server's own fields
    (``input_type``, ``truncate``) key too (they were left out: a passage got a query's
    vectors). ``chain``: the route's chain chosen, when it has several (another chain's model
    makes other vectors)."""
    fields = {k: v for k, v in body.items() if k not in EMBEDDING_NEUTRAL and v is not None}
    fields["model"] = route
    fields["kind"] = "embeddings"
    if chain:
        fields["~chain"] = chain
    raw = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return f"{exact_namespace(scope, route)}:{hashlib.sha256(raw).hexdigest()}"


def temperature_of(chat: Mapping[str, Any]) -> float:
    t = chat.get("temperature")
    return float(t) if isinstance(t, int | float) else DEFAULT_TEMPERATURE


def temperature_bucket(t: float) -> float:
    """The smallest bucket bound at or above ``t`` (0 stays its own bucket)."""
    for bound in _TEMPERATURE_BUCKETS:
        if t <= bound:
            return bound
    return math.inf


def max_tokens_bucket(n: int | None) -> int:
    if n is None:
        return 0
    for bound in _MAX_TOKENS_BUCKETS:
        if n <= bound:
            return bound
    return -1


def _max_tokens(chat: Mapping[str, Any]) -> int | None:
    n = chat.get("max_completion_tokens", chat.get("max_tokens"))
    return n if isinstance(n, int) else None


def _split(messages: list[Mapping[str, Any]]) -> tuple[list[str], list[Any], str]:
    """(system texts, earlier turns, final user text)."""
    system = [
        content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    ]
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    final = content_text(turns[-1].get("content")) if turns else ""
    earlier = [[m.get("role"), m.get("content"), m.get("tool_calls")] for m in turns[:-1]]
    return system, earlier, final


def semantic_namespace(req: ChatRequest, scope: str, route: str, space: str = "") -> str:
    """The namespace a prompt's vector is stored and searched in: the scope and route, the
    parts of the request besides the last user turn that change the answer, and the
    embedder's vector ``space`` (vectors of two models are never compared)."""
    chat = req.chat
    system, earlier, _ = _split(list(chat.get("messages") or ()))
    other = {
        k: chat[k]
        for k in (
            "top_p",
            "stop",
            "seed",
            "tool_choice",
            "response_format",
            "logit_bias",
            "frequency_penalty",
            "presence_penalty",
            "reasoning_effort",
            "parallel_tool_calls",
            "logprobs",
            "top_logprobs",
        )
        if chat.get(k) is not None
    }
    parts = [
        _digest(system),
        _digest(earlier),
        temperature_bucket(temperature_of(chat)),
        max_tokens_bucket(_max_tokens(chat)),
        _digest(chat.get("tools")),
        _digest(other),
    ]
    if space:
        parts.append(space)
    if extra := unmodelled(req):
        parts.append(_digest([req.dialect, extra]))
    if left_out := dropped(req):
        parts.append(_digest(left_out))
    if betas := beta_features(req):
        parts.append(_digest(betas))
    if req.chain:
        parts.append("chain:" + req.chain)
    return semantic_scope_prefix(scope, route) + _digest(parts, 15)


def semantic_scope_prefix(scope: str, route: str) -> str:
    """What every semantic namespace of a tenant scope and route starts with (for flushes)."""
    return "s" + _digest(["sem", scope, route], 8)


def semantic_text(req: ChatRequest) -> str:
    """The text to embed: the final user turn (context is pinned by the namespace)."""
    _, _, final = _split(list(req.chat.get("messages") or ()))
    return final.strip()


def holds_one_answer(req: ChatRequest) -> bool:
    """Whether an entry can hold this request's answer: one choice, no log probabilities
    (an entry keeps the first choice's text and calls only: a hit gave n=2 one choice and
    logprobs null), no thinking or reasoning items (an Anthropic caller's ``thinking``, a
    Responses caller's ``reasoning`` or reasoning ``include``: the entry would drop them, and
    the stream was decoded to fill it, which dropped the thinking blocks and signatures
    Anthropic needs passed back with a tool-use turn)."""
    chat, body = req.chat, req.body
    thinking = body.get("thinking")
    return (
        chat.get("n", 1) in (None, 1)
        and not chat.get("logprobs")
        and (chat.get("top_logprobs") is None)
        and not (isinstance(thinking, dict) and thinking.get("type") != "disabled")
        and not (req.dialect == "responses" and _reasons(body))
    )


def _reasons(body: Mapping[str, Any]) -> bool:
    include = body.get("include")
    asked = isinstance(include, list) and any("reasoning" in str(i) for i in include)
    return asked or body.get("reasoning") is not None


def is_shareable(req: ChatRequest, cfg: CacheConfig) -> bool:
    """Whether a semantic (near-match) answer may be served or stored for this request."""
    chat = req.chat
    messages = list(chat.get("messages") or ())
    if not messages or messages[-1].get("role") != "user":
        return False
    content = messages[-1].get("content")
    if isinstance(content, list) and any(
        not isinstance(p, dict) or p.get("type") != "text" for p in content
    ):  # an image: the text alone is compared, so another image's answer would be served
        return False
    if chat.get("n", 1) not in (None, 1):
        return False
    if temperature_of(chat) > cfg.max_temperature:
        return False
    if not cfg.allow_tools and any(m.get("role") in ("tool", "function") for m in messages):
        return False
    return bool(semantic_text(req))


__all__ = [
    "ANSWER_FIELDS",
    "DEFAULT_TEMPERATURE",
    "EMBEDDING_NEUTRAL",
    "NEUTRAL_FIELDS",
    "TRANSLATED_FIELDS",
    "beta_features",
    "dropped",
    "embedding_key",
    "exact_key",
    "exact_namespace",
    "holds_one_answer",
    "is_shareable",
    "max_tokens_bucket",
    "semantic_namespace",
    "semantic_scope_prefix",
    "semantic_text",
    "temperature_bucket",
    "temperature_of",
    "tenant_scope",
    "unmodelled",
]
