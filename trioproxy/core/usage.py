"""Both providers' usage conventions to and from one :class:`~trioproxy.core.types.Usage`.

OpenAI reports *subsets*: ``prompt_tokens`` includes
``prompt_tokens_details.cached_tokens`` and ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``. Anthropic reports *disjoint*
fields: ``input_tokens`` (uncached), ``cache_read_input_tokens`` and
``cache_creation_input_tokens``, the last split by TTL in
``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``
(a creation count without that split is a 5-minute write, the default TTL).

The ``*_json`` functions render a usage back in either dialect, without loss:
OpenAI has no field for cache writes, so an OpenAI-dialect usage with writes
also carries Anthropic's ``cache_creation_input_tokens`` / ``cache_creation``
at the top level (inside ``prompt_tokens``, as some OpenAI-compatible gateways
report them), and :func:`from_openai` reads them back. Pure; raises
``ValueError`` on malformed counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioproxy.core.types import Usage


def _count(raw: Mapping[str, Any], key: str, *, required: bool = False) -> int:
    value = raw.get(key)
    if value is None and not required:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"malformed usage field {key!r}: {value!r}")
    return value


def _details(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def from_openai(raw: Mapping[str, Any]) -> Usage:
    """An OpenAI ``usage`` object (chat completions) as disjoint buckets."""
    prompt = _count(raw, "prompt_tokens", required=True)
    completion = _count(raw, "completion_tokens", required=True)
    cached = min(prompt, _count(_details(raw, "prompt_tokens_details"), "cached_tokens"))
    reasoning = _count(_details(raw, "completion_tokens_details"), "reasoning_tokens")
    writes = from_anthropic(
        {k: raw[k] for k in ("cache_creation_input_tokens", "cache_creation") if k in raw},
        output_required=False,
    )
    w5m = min(writes.cache_write_5m_tokens, prompt - cached)
    w1h = min(writes.cache_write_1h_tokens, prompt - cached - w5m)
    return Usage(
        input_tokens=prompt - cached - w5m - w1h,
        output_tokens=completion,
        cache_read_tokens=cached,
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
        reasoning_tokens=min(reasoning, completion),
    )


def from_anthropic(raw: Mapping[str, Any], *, output_required: bool = True) -> Usage:
    """An Anthropic ``usage`` object as buckets (already disjoint; writes split by TTL)."""
    created = _count(raw, "cache_creation_input_tokens")
    split = _details(raw, "cache_creation")
    w1h = _count(split, "ephemeral_1h_input_tokens")
    w5m = _count(split, "ephemeral_5m_input_tokens")
    w5m = max(w5m, created - w1h)  # an unsplit creation count is a 5-minute write
    return Usage(
        input_tokens=_count(raw, "input_tokens"),
        output_tokens=_count(raw, "output_tokens", required=output_required),
        cache_read_tokens=_count(raw, "cache_read_input_tokens"),
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
    )


def from_responses(raw: Mapping[str, Any]) -> Usage:
    """An OpenAI Responses API ``usage`` (``input_tokens`` includes the cached ones)."""
    if not isinstance(raw.get("input_tokens"), int) or not isinstance(
        raw.get("output_tokens"), int
    ):
        raise ValueError(f"malformed usage: {dict(raw)!r}")
    return from_openai(
        {
            "prompt_tokens": raw["input_tokens"],
            "completion_tokens": raw["output_tokens"],
            "prompt_tokens_details": raw.get("input_tokens_details"),
            "completion_tokens_details": raw.get("output_tokens_details"),
            **{k: raw[k] for k in ("cache_creation_input_tokens", "cache_creation") if k in raw},
        }
    )


def merge_anthropic(acc: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Fold a stream event's ``usage`` into ``acc``: ``message_delta`` counts are
    cumulative and may omit (or null) what ``message_start`` reported."""
    for key, value in update.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(acc.get(key), dict):
            merge_anthropic(acc[key], value)
        else:
            acc[key] = dict(value) if isinstance(value, Mapping) else value


def openai_json(usage: Usage) -> dict[str, Any]:
    """``usage`` for an OpenAI-dialect body or final stream chunk."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.cache_write_tokens:
        out["cache_creation_input_tokens"] = usage.cache_write_tokens
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        }
    return out


def responses_json(usage: Usage) -> dict[str, Any]:
    """``usage`` in the OpenAI Responses shape (cache writes carried as in :func:`openai_json`)."""
    chat = openai_json(usage)
    out: dict[str, Any] = {
        "input_tokens": chat.pop("prompt_tokens"),
        "input_tokens_details": chat.pop("prompt_tokens_details"),
        "output_tokens": chat.pop("completion_tokens"),
        "output_tokens_details": chat.pop("completion_tokens_details"),
        "total_tokens": chat.pop("total_tokens"),
    }
    return {**out, **chat}


def anthropic_json(usage: Usage) -> dict[str, Any]:
    """``usage`` for an Anthropic-dialect message (or a stream's ``message_start``)."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.output_tokens,
    }


def with_output(usage: Usage, output_tokens: int, *, estimated: bool) -> Usage:
    """``usage``'s input buckets with a different output count (a stream's estimate)."""
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=output_tokens,
        estimated=estimated,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
    )


__all__ = [
    "anthropic_json",
    "from_anthropic",
    "from_openai",
    "from_responses",
    "merge_anthropic",
    "openai_json",
    "responses_json",
    "with_output",
]
