"""Plain content events recognised by their bytes, and their tokens (pure).

The verbatim relay (:mod:`trioproxy.providers.passthrough`) forwards the bulk of a stream, its
plain content events (a text delta: an OpenAI chunk, an Anthropic ``text_delta``, a Responses
``response.output_text.delta``), without parsing them. :func:`plain_openai`,
:func:`plain_anthropic` and :func:`plain_responses` say, from the bytes alone, whether an event
is one that the provider's stream decoder would only meter (no finish, usage, tools, error...);
:func:`openai_tokens` and :func:`anthropic_tokens` count the tokens of one such event, parsed,
with :func:`~trioproxy.core.tokens.estimate_tokens` exactly as the decoder path counts them.
"""

from __future__ import annotations

import re
from typing import Any

from trioproxy.core.tokens import estimate_tokens
from trioproxy.providers.openai import reasoning_of

OPENAI_DATA = b"data: {"
_ANTHROPIC_TEXT = b'event: content_block_delta\ndata: {"type":"content_block_delta"'
ANTHROPIC_DATA = len(b"event: content_block_delta\ndata: ")
_ANTHROPIC_TEXT_DELTA = b'"delta":{"type":"text_delta","text":'
_RESPONSES_TEXT = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
RESPONSES_DATA = len(b"event: response.output_text.delta\ndata: ")
_RESPONSES_DELTA = b'"delta":'
RESPONSES_TEXT_TYPE = b'"response.output_text.delta"'
EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
"""An OpenAI usage-only chunk's ``"choices": []``, however spaced."""


def plain_openai(ev: bytes, end: int) -> bool:
    """``ev[:end]`` is a content chunk that the decoder would only meter (no finish,
    usage, tools, error, or several lines). Searched in place (no copy of the event);
    what follows ``end`` is its blank line at most, which no needle but the newline can
    match: the searches run unbounded (``find`` with bounds parses two more arguments,
    ~80 ns a call)."""
    if not ev.startswith(OPENAI_DATA) or 0 <= ev.find(b"\n") < end:
        return False
    if ev.find(b'"error"') >= 0 or ev.find(b'"tool_calls"') >= 0:
        return False
    return _absent_or_null(ev, b'"usage"') and _absent_or_null(ev, b'"finish_reason"')


def plain_anthropic(ev: bytes, end: int) -> bool:
    """A ``text_delta`` (JSON quotes inside a string are escaped, so these bytes
    are the delta's own type)."""
    return (
        ev.startswith(_ANTHROPIC_TEXT)
        and ev.find(_ANTHROPIC_TEXT_DELTA) >= 0
        and ev.count(b"\n") == 1 + len(ev) - end  # one line break, then the blank line
    )


def plain_responses(ev: bytes, end: int) -> bool:
    """A ``response.output_text.delta`` with its ``delta`` (JSON quotes inside a string
    are escaped, so these bytes are its type and its key), one line break, then the
    blank line at most."""
    return (
        ev.startswith(_RESPONSES_TEXT)
        and ev.find(_RESPONSES_DELTA) >= 0
        and ev.count(b"\n") == 1 + len(ev) - end
    )


def _absent_or_null(ev: bytes, key: bytes) -> bool:
    """Whether the event's JSON has no ``key`` or holds null there, however spaced: servers
    that write ``"usage": {`` (Python's json.dumps) had their usage chunk taken for content,
    never read, and the request billed on the gateway's estimate (a review: 15 µUSD billed
    for 9,000). JSON escapes the quotes inside strings, so ``key`` is a key here."""
    at = ev.find(key)
    if at < 0:
        return True
    return ev[at + len(key) : at + len(key) + 16].lstrip(b": \t").startswith(b"null")


def anthropic_tokens(data: Any) -> tuple[int, int]:
    """Tokens of a ``text_delta``'s text, and 0 hidden (thinking deltas are decoded)."""
    delta = data.get("delta") if isinstance(data, dict) else None
    if not isinstance(delta, dict) or delta.get("type") != "text_delta":
        return 0, 0
    text = delta.get("text")
    return (estimate_tokens(text) if isinstance(text, str) else 0), 0


def openai_tokens(chunk: Any) -> tuple[int, int]:
    """Tokens of choice 0's content delta and of its streamed reasoning (what the decoder
    would meter)."""
    if not isinstance(chunk, dict):
        raise ValueError("expected a JSON object")
    tokens = hidden = 0
    try:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                tokens += estimate_tokens(text)
            if (thought := reasoning_of(delta)) is not None:
                hidden += estimate_tokens(thought)
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"malformed chunk: {exc!r}") from None
    return tokens, hidden


__all__ = [
    "ANTHROPIC_DATA",
    "EMPTY_CHOICES",
    "OPENAI_DATA",
    "RESPONSES_DATA",
    "RESPONSES_TEXT_TYPE",
    "anthropic_tokens",
    "openai_tokens",
    "plain_anthropic",
    "plain_openai",
    "plain_responses",
]
