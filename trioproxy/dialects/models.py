"""``GET /v1/models`` (and ``/v1/models/{id}``) in either caller's shape. Pure.

An OpenAI caller gets ``{"object": "list", "data": [...]}``; a caller that sends
``anthropic-version`` (the Anthropic SDK always does) gets Anthropic's page
``{"data": [{"type": "model", ...}], "has_more", "first_id", "last_id"}`` with
its ``limit`` / ``after_id`` / ``before_id`` paging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

ANTHROPIC_DEFAULT_LIMIT = 20
ANTHROPIC_MAX_LIMIT = 1000
CREATED_AT = "1970-01-01T00:00:00Z"
"""Routes and configured models have no release date; Anthropic's shape needs one."""


def openai_model(name: str, *, route: bool) -> dict[str, Any]:
    owner = "trioproxy-route" if route else "trioproxy"
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def anthropic_model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": CREATED_AT}


def openai_list(names: Sequence[str], routes: frozenset[str]) -> bytes:
    data = [openai_model(n, route=n in routes) for n in names]
    return orjson.dumps({"object": "list", "data": data})


def anthropic_list(names: Sequence[str], query: Mapping[str, str]) -> bytes:
    """One page; raises ``ValueError`` naming a bad query parameter."""
    raw_limit = query.get("limit", str(ANTHROPIC_DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= ANTHROPIC_MAX_LIMIT:
        raise ValueError(f"limit: must be an integer from 1 to {ANTHROPIC_MAX_LIMIT}")
    limit = int(raw_limit)
    names = list(names)
    start, end = 0, len(names)
    if (after := query.get("after_id")) is not None:
        if after not in names:
            raise ValueError(f"after_id: unknown model {after!r}")
        start = names.index(after) + 1
    if (before := query.get("before_id")) is not None:
        if before not in names:
            raise ValueError(f"before_id: unknown model {before!r}")
        end = names.index(before)
        start = max(start, end - limit) if after is None else start
    page = names[start : min(end, start + limit)]
    backwards = before is not None and after is None  # has_more looks in the paging direction
    return orjson.dumps(
        {
            "data": [anthropic_model(n) for n in page],
            "has_more": start > 0 if backwards else start + len(page) < end,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )


__all__ = ["anthropic_list", "anthropic_model", "openai_list", "openai_model"]
