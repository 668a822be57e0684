"""What one attempt consumed, as far as the gateway knows (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trioproxy.core.tokens import event_tokens
from trioproxy.core.types import (
    FinishReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from trioproxy.core.usage import with_output


@dataclass(slots=True)
class Meter:
    """What one attempt consumed, as far as we know."""

    usage: Usage | None = None
    """Exact usage reported by the provider."""
    up_front: Usage | None = None
    """Exact input buckets reported up front (Anthropic message_start)."""
    output_estimate: int = 0
    """Estimated output tokens of the content received so far."""
    received_any: bool = False
    response_id: str = ""
    response_model: str = ""
    finish: FinishReason | None = None
    """The provider's answer id, model and finish reason, as far as received (traces)."""
    bad_usage: str | None = None
    """Why the provider's usage was skipped as malformed, if it was: :meth:`final` is then
    the estimate, as when a stream reports no usage."""
    deferred: Callable[[], int] | None = None
    """More estimated output tokens, counted only when asked (a passthrough stream's
    content events: :meth:`~trioproxy.providers.passthrough.PassthroughTap.output_tokens`;
    the thinking a decoder saw: ``StreamDecoder.hidden_tokens``)."""
    hidden: Callable[[], int] | None = None
    """The estimated tokens of hidden reasoning among them (``StreamDecoder.hidden_tokens``):
    an estimated usage's ``reasoning_tokens``."""

    def observe(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta | ToolCallDelta):
            self.output_estimate += event_tokens(event)
        elif isinstance(event, UsageReport):
            self.usage = event.usage
        elif isinstance(event, StreamStart):
            self.response_id, self.response_model = event.id, event.model
            if event.usage is not None:
                self.up_front = event.usage
        elif isinstance(event, StreamEnd):
            self.finish = event.finish_reason

    def final(self, prompt_estimate: int) -> Usage:
        if self.usage is not None:
            return self.usage
        if not self.received_any:
            return Usage(0, 0, estimated=False)
        known = self.up_front if self.up_front is not None else Usage(prompt_estimate, 0)
        hidden = self.hidden() if self.hidden is not None else 0
        return with_output(known, self.output_tokens(), estimated=True, reasoning_tokens=hidden)

    def output_tokens(self) -> int:
        """Estimated output tokens of everything received so far."""
        extra = self.deferred() if self.deferred is not None else 0
        return self.output_estimate + extra


__all__ = ["Meter"]
