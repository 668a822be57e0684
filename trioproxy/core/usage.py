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

This is where the gateway reads a provider's counts (chat, messages, responses, their
streams, embeddings' ``prompt_tokens``, count_tokens' ``input_tokens``: :func:`token_count`),
and where it decides what a count may be: an integer from 0 to :data:`MAX_TOKENS`. Anything
else (a negative, a fraction, ``1e30``, a string, 2**63 which neither SQLite nor PostgreSQL
stores) is :class:`MalformedUsage`. Before anything was relayed that attempt failed (the
next target is tried). A stream whose usage comes after content already relayed is not
failed for it: the content is the provider's and complete, so the stream ends as one
without usage ends, the malformed counts are neither relayed nor stored, the attempt is
billed the gateway's estimate, and the request is logged and counted
(``trioproxy_upstream_bad_usage_total``). So the ledger, the journal, the budget settle and
the metrics only ever see counts that fit them, and their sums too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioproxy.core.types import Usage

MAX_TOKENS = 1_000_000_000
"""The largest count a provider may report for one bucket of one answer: a thousand times
the largest context window sold today, and small enough that a request's cost (five buckets
at any configured price) and a year of such requests summed in a roll-up stay far inside a
64-bit integer (SQLite, PostgreSQL ``bigint``, the journal's JSON)."""


class MalformedUsage(ValueError):
    """A provider's usage that is no usage: a count that is not one (:func:`token_count`),
    or a usage missing where the wire requires it."""


def token_count(raw: Mapping[str, Any], key: str, *, required: bool = False) -> int:
    """``raw[key]`` as a token count (absent or null: 0 unless ``required``); raises
    :class:`MalformedUsage` naming the field for anything but an integer from 0 to
    :data:`MAX_TOKENS`."""
    value = raw.get(key)
    if value is None and not required:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOKENS:
        raise MalformedUsage(f"malformed usage field {key!r}: {repr(value)[:40]}")
    return value


def _details(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def from_openai(raw: Mapping[str, Any]) -> Usage:
    """An OpenAI ``usage`` object (chat completions) as disjoint buckets."""
    prompt = token_count(raw, "prompt_tokens", required=True)
    completion = token_count(raw, "completion_tokens", required=True)
    cached = min(prompt, token_count(_details(raw, "prompt_tokens_details"), "cached_tokens"))
    reasoning = token_count(_details(raw, "completion_tokens_details"), "reasoning_tokens")
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
    created = token_count(raw, "cache_creation_input_tokens")
    split = _details(raw, "cache_creation")
    w1h = token_count(split, "ephemeral_1h_input_tokens")
    w5m = token_count(split, "ephemeral_5m_input_tokens")
    w5m = max(w5m, created - w1h)  # an unsplit creation count is a 5-minute write
    return Usage(
        input_tokens=token_count(raw, "input_tokens"),
        output_tokens=token_count(raw, "output_tokens", required=output_required),
        cache_read_tokens=token_count(raw, "cache_read_input_tokens"),
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
    )


def from_responses(raw: Mapping[str, Any]) -> Usage:
    """An OpenAI Responses API ``usage`` (``input_tokens`` includes the cached ones)."""
    token_count(raw, "input_tokens", required=True)
    token_count(raw, "output_tokens", required=True)
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


def with_output(
    usage: Usage, output_tokens: int, *, estimated: bool, reasoning_tokens: int = 0
) -> Usage:
    """``usage``'s input buckets with a different output count (a stream's estimate), of which
    ``reasoning_tokens`` were hidden reasoning."""
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=output_tokens,
        estimated=estimated,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        reasoning_tokens=reasoning_tokens,
    )


__all__ = [
    "MAX_TOKENS",
    "MalformedUsage",
    "anthropic_json",
    "from_anthropic",
    "from_openai",
    "from_responses",
    "merge_anthropic",
    "openai_json",
    "responses_json",
    "token_count",
    "with_output",
]
