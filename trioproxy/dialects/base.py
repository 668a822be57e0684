"""What a client dialect is: parse the caller's request, encode our answer.

Pure: bytes in, values out, values in, bytes out. One module per dialect
(:mod:`.openai`, :mod:`.anthropic`).
"""

from __future__ import annotations

from typing import Protocol

from trioproxy.core.types import ChatRequest, Completion, Dialect, StreamEvent
from trioproxy.errors import GatewayError


class StreamEncoder(Protocol):
    def encode(self, event: StreamEvent) -> bytes:
        """SSE bytes for one canonical event (may be empty)."""
        ...

    def finish(self) -> bytes:
        """Terminal bytes after a clean end (``[DONE]`` / ``message_stop``)."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """Terminal bytes for a stream that failed after it started."""
        ...


class ClientDialect(Protocol):
    name: Dialect

    def parse_request(self, body: bytes) -> ChatRequest:
        """Validate the body; raises :class:`~trioproxy.errors.CallerError`."""
        ...

    def render_completion(self, completion: Completion, req: ChatRequest) -> bytes: ...

    def new_stream_encoder(self, req: ChatRequest) -> StreamEncoder: ...

    def render_error(self, err: GatewayError) -> bytes:
        """The dialect's error envelope (JSON body)."""
        ...


__all__ = ["ClientDialect", "StreamEncoder"]
