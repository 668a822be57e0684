"""What a client dialect is: parse the caller's request, encode our answer.

Pure: bytes in, values out, values in, bytes out. One module per dialect
(:mod:`.openai`, :mod:`.anthropic`).
"""

from __future__ import annotations

from typing import Any, Protocol

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


ID_PREFIXES = ("chatcmpl-", "msg_", "resp_")
"""How each wire's answer ids begin (Chat Completions, Messages, Responses)."""


def dialect_id(prefix: str, upstream_id: str) -> str:
    """The upstream's answer id in the caller's dialect: ``chatcmpl-B9M`` from OpenAI is
    ``msg_B9M`` to an Anthropic caller and ``msg_01X`` from Anthropic ``chatcmpl-01X`` to an
    OpenAI one (the SDKs and the callers' logs expect their own shape); the rest of the id is
    the upstream's, so its logs still find it, and a round trip gives the id back."""
    if upstream_id.startswith(prefix):
        return upstream_id
    for other in ID_PREFIXES:
        if upstream_id.startswith(other):
            return prefix + upstream_id[len(other) :]
    return prefix + upstream_id


def translated(
    dialect: Dialect, data: dict[str, Any], chat: dict[str, Any], model: str, *,
    stream: bool, max_tokens: int | None, end_user: str | None,
) -> ChatRequest:  # fmt: skip
    """The request of a caller whose body was translated into the canonical chat form
    ``chat``: a stream asks for usage (the gateway meters every stream), the end user is
    OpenAI's ``user``."""
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if end_user is not None:
        chat["user"] = end_user
    return ChatRequest(
        dialect=dialect, body=data, chat=chat, model=model, stream=stream, include_usage=True,
        max_tokens=max_tokens, end_user=end_user,
    )  # fmt: skip


__all__ = ["ClientDialect", "StreamEncoder", "translated"]
