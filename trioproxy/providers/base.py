"""What a provider adapter is: a pure translation, no I/O.

An adapter turns a :class:`ChatRequest` into the bytes of one upstream HTTP
request and turns upstream bytes back into canonical values. The network
lives in :mod:`trioproxy.upstream.transport`; adapters are tested with bytes in,
values out. Adding a provider is one module plus one line in
:mod:`trioproxy.providers.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from trioproxy.core.types import (
    ChatRequest,
    Completion,
    FinishReason,
    SSEEvent,
    StreamEvent,
    ToolCall,
    Usage,
    Wire,
)
from trioproxy.core.usage import MalformedUsage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    path: str
    """Appended to the provider's base URL, e.g. ``/v1/chat/completions``."""
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class BetaPolicy:
    """A provider's allow and deny lists for the caller's ``anthropic-beta`` values."""

    allow: frozenset[str] | None = None
    """Only these pass; None = any."""
    deny: frozenset[str] = frozenset()
    """Never these (checked after the allow list)."""

    def filter(self, requested: tuple[str, ...]) -> list[str]:
        allow, deny = self.allow, self.deny
        return [b for b in requested if (allow is None or b in allow) and b not in deny]


class StreamDecoder(Protocol):
    """Per-stream state turning upstream SSE events into canonical events."""

    @property
    def done(self) -> bool:
        """True once the provider's terminal event has been seen."""
        ...

    @property
    def bad_usage(self) -> str | None:
        """Why the provider's usage was skipped as malformed, once it was (the events
        went on without it: :meth:`JsonEventDecoder.usage_or_none`)."""
        ...

    @property
    def hidden_tokens(self) -> int:
        """Estimated output tokens of what no canonical event carries (Claude's thinking):
        billed as output, metered along the stream (a capped reservation grows with them)."""
        ...

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        """Decode one upstream event; raises ``ValueError`` on garbage."""
        ...


class ProviderAdapter(Protocol):
    wire: Wire

    def build_request(
        self,
        req: ChatRequest,
        deployment: str,
        api_key: str | None,
        betas: BetaPolicy | None = None,
        max_output: int | None = None,
    ) -> UpstreamRequest:
        """Upstream request for ``deployment`` (``betas``: which of the caller's
        ``anthropic-beta`` values this provider lets through). Streams always ask for usage.
        ``max_output``: the model's ``max_output_tokens``; the request's output cap is sent
        at most that, and that when the request names none (:func:`~trioproxy.core.tokens.answer_cap`)."""
        ...

    def parse_response(self, body: bytes) -> Completion:
        """Parse a 2xx non-stream body; raises ``ValueError`` on garbage."""
        ...

    def new_stream_decoder(self) -> StreamDecoder: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's human message from an error body (best effort)."""
        ...


def json_request(path: str, body: dict[str, Any], *headers: tuple[str, str]) -> UpstreamRequest:
    """A JSON POST to ``path`` with ``headers`` after its content type.

    The body is copied to its own size: ``orjson.dumps`` answers a bytes object that keeps
    its 4 KiB write buffer (an 85-byte body costs 4.2 KB of RSS), and this one is held for
    the whole request (a fallback or a hedge sends it again): 4 MB at 1,000 open streams."""
    body_bytes = bytes(memoryview(orjson.dumps(body)))
    return UpstreamRequest(path, (("content-type", "application/json"), *headers), body_bytes)


def bearer(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """``authorization: Bearer <key>`` (OpenAI's kinds), none without a key."""
    return (("authorization", f"Bearer {api_key}"),) if api_key is not None else ()


def completion_of(
    data: dict[str, Any], wire: Wire, text: str, finish_reason: FinishReason, usage: Usage,
    tool_calls: tuple[ToolCall, ...] = (), bad_usage: str | None = None, thinking: str = "",
) -> Completion:  # fmt: skip
    """A parsed 2xx body as the canonical answer: its ``id`` and ``model``, the body kept
    as it came (``native``, relayed verbatim to a caller of the same wire; a body without a
    usable usage gets the one the ledger bills: ``render_completion``)."""
    return Completion(
        id=str(data.get("id", "")), model=str(data.get("model", "")), text=text,
        finish_reason=finish_reason, usage=usage, tool_calls=tool_calls, wire=wire,
        native=data, bad_usage=bad_usage, thinking=thinking,
    )  # fmt: skip


class JsonAdapter:
    """The part every JSON provider adapter shares: its error bodies are read by
    :func:`error_message` (both envelopes, else the body, else the status)."""

    def error_message(self, status: int, body: bytes) -> str:
        return error_message(status, body)


class JsonEventDecoder:
    """The shared tail of a stream decoder whose events are JSON objects: nothing after
    the terminal event (:meth:`finish` marks it), each event parsed, and a malformed one
    a ``ValueError`` naming its type. Subclasses write :meth:`decode` (a ``KeyError``,
    ``TypeError`` or ``AttributeError`` in it means malformed) and, where the wire ends
    with ``data: [DONE]`` (not JSON), :meth:`done_marker`."""

    def __init__(self) -> None:
        self._done = False
        self._bad_usage: str | None = None
        self.bad_usages = 0
        """Events whose usage was skipped as malformed (the first one's reason:
        :attr:`bad_usage`)."""
        self.unbilled_ends = 0
        """Final events that must carry the stream's usage and came without a usable one (none,
        or no usage): Anthropic's ``message_delta``, a Responses terminal event, OpenAI's
        ``[DONE]`` when no usable usage came before it. A verbatim relay holds them back and
        writes them with the usage the ledger bills
        (:attr:`~trioproxy.providers.passthrough.Tapped.finish`; OpenAI's: a usage-only chunk
        of the gateway's before ``[DONE]``, when the caller asked for usage)."""
        self._hidden = 0

    @property
    def hidden_tokens(self) -> int:
        return self._hidden

    @property
    def done(self) -> bool:
        return self._done

    @property
    def bad_usage(self) -> str | None:
        return self._bad_usage

    def usage_or_none(self, parse: Callable[[T], Usage | None], raw: T) -> Usage | None:
        """``parse(raw)``, or None when the counts are no counts
        (:class:`~trioproxy.core.usage.MalformedUsage`): an event whose usage is malformed
        still carries its content and end, decoded as if it had no usage, and the reason
        is kept in :attr:`bad_usage` (the attempt decides: a failure before anything was
        relayed, else metered by estimate)."""
        try:
            return parse(raw)
        except MalformedUsage as exc:
            if self._bad_usage is None:
                self._bad_usage = str(exc)
            self.bad_usages += 1
            return None

    def finish(self) -> None:
        self._done = True

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._done:
            return []
        if event.data == "[DONE]":
            return self.done_marker()
        data = json_object(event.data)
        try:
            return self.decode(data)
        except (KeyError, TypeError, AttributeError) as exc:
            kind = data.get("type") or data.get("object") or "upstream"
            raise ValueError(f"malformed {kind} event: {exc!r}") from None

    def done_marker(self) -> list[StreamEvent]:
        """``data: [DONE]``: not JSON, so garbage unless the wire sends it."""
        raise ValueError("not JSON: [DONE]")

    def decode(self, data: dict[str, Any]) -> list[StreamEvent]:
        raise NotImplementedError


def json_object(data: bytes | str) -> dict[str, Any]:
    """Parse a JSON object; raises ``ValueError`` on anything else."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def error_text(body: dict[str, Any]) -> str | None:
    """``error.message`` (both providers' envelopes), or a bare ``error`` string."""
    err = body.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return err if isinstance(err, str) else None


def error_message(status: int, body: bytes) -> str:
    """The provider's human message from an error body, else the body or the status."""
    try:
        message = error_text(json_object(body))
    except ValueError:
        message = None
    return message or body[:500].decode("utf-8", errors="replace") or f"HTTP {status}"


__all__ = [
    "BetaPolicy",
    "JsonAdapter",
    "JsonEventDecoder",
    "ProviderAdapter",
    "StreamDecoder",
    "UpstreamRequest",
    "bearer",
    "completion_of",
    "error_message",
    "error_text",
    "json_object",
    "json_request",
]
