"""A hard upper bound on the input tokens a provider can bill for a request.

Everything a provider bills as input is counted, not only the message text:
names, tool calls, tool results, ``refusal`` parts, every image (a fixed
per-provider allowance: providers bill an image by its size after their own
down-scaling, not by its bytes), files and audio (their bytes plus one image
allowance), and the JSON of ``tools``, ``tool_choice``, ``response_format`` and
legacy ``functions`` plus :data:`TOOLS_OVERHEAD` when tools are present (the
provider's own tool-use instructions). Text counts one token per UTF-8 byte,
which no byte-level BPE tokenizer can exceed. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from trioproxy.core.tokens import max_tokens_bound, prompt_tokens

IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
FILE_PARTS = frozenset({"file", "input_file", "input_audio", "document"})
TOOLS_OVERHEAD = 1_000
"""Tokens a provider may add for tool use (Anthropic documents ~350 for its tool prompt)."""
_PRICED_FIELDS = ("tools", "functions", "tool_choice", "response_format")


def json_bytes(value: Any) -> int:
    return len(orjson.dumps(value))


def parts_bound(value: Any, image_tokens: int) -> int:
    """Images at the allowance, files at bytes + allowance, other strings at their bytes,
    anywhere inside ``value`` (content parts, tool results)."""
    if isinstance(value, str):
        return max_tokens_bound(value)
    if isinstance(value, list):
        return sum(parts_bound(v, image_tokens) for v in value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind in IMAGE_PARTS:
            return image_tokens
        if kind in FILE_PARTS:
            return json_bytes(value) + image_tokens
        return sum(parts_bound(v, image_tokens) for k, v in value.items() if k != "type")
    return 0


def input_bound(chat: Mapping[str, Any], *, image_tokens: int, extra: Iterable[Any] = ()) -> int:
    """Upper bound on billed input tokens of a canonical chat body.

    ``extra``: parts of the caller's own body that the canonical form leaves out but
    a same-wire provider still receives (Anthropic tool-result images, thinking blocks).
    """
    messages = chat.get("messages") or []
    total = prompt_tokens(messages, bound=True)  # text content and tool calls
    for m in messages:
        if isinstance(name := m.get("name"), str):
            total += max_tokens_bound(name)
        content = m.get("content")
        if isinstance(content, list):  # text was counted above; the rest is here
            for part in content:
                if isinstance(part, Mapping) and part.get("type") != "text":
                    total += parts_bound(part, image_tokens)
    if chat.get("tools") or chat.get("functions"):
        total += TOOLS_OVERHEAD
    for key in _PRICED_FIELDS:
        if chat.get(key) is not None:
            total += json_bytes(chat[key])
    return total + sum(parts_bound(v, image_tokens) for v in extra)


__all__ = ["FILE_PARTS", "IMAGE_PARTS", "TOOLS_OVERHEAD", "input_bound", "parts_bound"]
