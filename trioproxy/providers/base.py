"""What a provider adapter is: a pure translation, no I/O.

An adapter turns a :class:`ChatRequest` into the bytes of one upstream HTTP
request and turns upstream bytes back into canonical values. The network
lives in :mod:`trioproxy.upstream.transport`; adapters are tested with bytes in,
values out. Adding a provider is one module plus one line in
:mod:`trioproxy.providers.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from trioproxy.core.types import ChatRequest, Completion, SSEEvent, StreamEvent, Wire


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
    ) -> UpstreamRequest:
        """Upstream request for ``deployment`` (``betas``: which of the caller's
        ``anthropic-beta`` values this provider lets through). Streams always ask for usage."""
        ...

    def parse_response(self, body: bytes) -> Completion:
        """Parse a 2xx non-stream body; raises ``ValueError`` on garbage."""
        ...

    def new_stream_decoder(self) -> StreamDecoder: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's human message from an error body (best effort)."""
        ...


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
    "ProviderAdapter",
    "StreamDecoder",
    "UpstreamRequest",
    "error_message",
    "error_text",
    "json_object",
]
