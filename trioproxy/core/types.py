"""Canonical, dialect-independent values that flow through the gateway.

A caller speaks a *dialect* (OpenAI chat completions or Anthropic messages);
an upstream provider speaks a *wire* format, which is one of the same two.
Client dialects parse requests into :class:`ChatRequest` and encode
:class:`Completion` / :data:`StreamEvent` values back; provider adapters do
the reverse on the upstream side. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Dialect = Literal["openai", "anthropic", "responses"]
"""What a caller speaks (its SDK's request and response format; ``responses``: OpenAI's
Responses API)."""
Wire = Literal["openai", "anthropic", "responses"]
"""A provider's wire format (``responses`` is spoken natively by ``openai`` providers only)."""

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
"""OpenAI's finish reasons; Anthropic stop reasons map onto these and back."""

Priority = Literal["low", "medium", "high"]


TOKEN_COUNTS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
)
"""The counts a request's token total adds up: what a settle takes from a token budget
(:attr:`Usage.total`) and what a budget rebuild reads from the ledger (raw records,
``ledger/backend.py: REQUEST_TOKENS``, and the hourly roll-up, ``ledger/spend.py``); the
ledger's columns bear the same names."""


def total_tokens(counts: Any) -> int:
    """The token total of anything with the :data:`TOKEN_COUNTS` attributes."""
    return sum(getattr(counts, name) for name in TOKEN_COUNTS)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one upstream call consumed, in disjoint billing buckets.

    Every prompt token is in exactly one of ``input_tokens`` (uncached input),
    ``cache_read_tokens``, ``cache_write_5m_tokens`` or ``cache_write_1h_tokens``
    (Anthropic's convention; OpenAI's subsets are normalised into it by
    :mod:`trioproxy.core.usage`). ``reasoning_tokens`` is *inside*
    ``output_tokens`` (billed as output) and kept apart for reporting only.
    """

    input_tokens: int
    """Uncached input tokens (billed at the input price)."""
    output_tokens: int
    """All output tokens, reasoning included."""
    estimated: bool = False
    """True when the counts are our estimate (broken/aborted stream), not upstream's."""
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    """Part of ``output_tokens``."""

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not (OpenAI's ``prompt_tokens``)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total(self) -> int:
        return total_tokens(self)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request.

    ``body`` is the caller's JSON exactly as sent (after validation), used for
    same-dialect passthrough so that fields we do not model still reach the
    provider. ``chat`` is the same request in OpenAI chat-completions form, the
    canonical shape used for translation, token estimation and cache keys.
    Neither dict is mutated after construction.
    """

    dialect: Dialect
    body: dict[str, Any]
    chat: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    """The caller wants a usage report in the stream (Anthropic: always)."""
    max_tokens: int | None
    end_user: str | None = None
    anthropic_version: str | None = None
    """The caller's ``anthropic-version`` header (passed on to an Anthropic provider when
    the caller speaks Anthropic)."""
    anthropic_beta: tuple[str, ...] = ()
    """The caller's ``anthropic-beta`` values, in order (filtered per provider)."""
    chain: str = ""
    """The route's chain chosen for this request when the route has several (by priority or
    size: each may answer with other models), else empty; the response cache keys it."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON text, as OpenAI carries it."""


@dataclass(frozen=True, slots=True)
class Completion:
    """A complete (non-streamed) answer from a provider."""

    id: str
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    wire: Wire = "openai"
    native: dict[str, Any] | None = field(default=None, compare=False)
    """The provider's own JSON body, used verbatim when the caller speaks ``wire`` (with
    :attr:`usage` as its ``usage`` when that is the gateway's estimate: the body had none, or
    no usable one)."""
    bad_usage: str | None = field(default=None, compare=False)
    """Why the body's usage was no usage though it came (an Anthropic usage without an input
    count): :attr:`usage` is the gateway's estimate, and the attempt is logged and counted as
    one whose usage was malformed, as a stream's is."""
    thinking: str = field(default="", compare=False)
    """The answer's hidden reasoning as text (Anthropic thinking blocks, an OpenAI-compatible
    server's ``reasoning_content``): billed as output in an estimate, as a stream's is."""


# --- stream events ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStart:
    id: str
    model: str
    usage: Usage | None = None
    """Prompt usage (output 0 or so far) when the provider reports it up front
    (Anthropic ``message_start``): exact input buckets even if the stream breaks later."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The model finished its answer (before any trailing usage report)."""

    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage


@dataclass(frozen=True, slots=True)
class OutputItem:
    """A finished output item of the Responses wire that no other event carries (a reasoning
    item: its summary and, when asked for, its ``encrypted_content``, which a stateless caller
    passes back with the next turn), relayed whole to a Responses caller; other callers'
    encoders, the meter and the cache's collector pass it by."""

    item: dict[str, Any] = field(compare=False)


StreamEvent = StreamStart | TextDelta | ToolCallDelta | StreamEnd | UsageReport | OutputItem


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event as framed on the wire."""

    data: str
    event: str | None = None


__all__ = [
    "ChatRequest",
    "Completion",
    "Dialect",
    "FinishReason",
    "OutputItem",
    "Priority",
    "SSEEvent",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageReport",
    "Wire",
]
