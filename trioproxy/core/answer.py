"""A complete answer and its stream events, both ways (pure).

:class:`StreamCollector` rebuilds the complete answer of a relayed stream (for the
cache); :func:`replay_events` turns a stored answer back into the canonical events of a
stream (a cache hit asked for as a stream).
"""

from __future__ import annotations

from collections.abc import Iterator

from trioproxy.core.tokens import split_tokens
from trioproxy.core.types import (
    Completion,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
)

REPLAY_TOKENS_PER_CHUNK = 8
"""A cached answer is replayed as a stream in chunks of this many tokens."""


def replay_events(completion: Completion) -> Iterator[StreamEvent]:
    """A cached answer as the canonical events of a stream."""
    yield StreamStart(completion.id, completion.model, completion.usage)
    tokens = split_tokens(completion.text)
    for i in range(0, len(tokens), REPLAY_TOKENS_PER_CHUNK):
        yield TextDelta("".join(tokens[i : i + REPLAY_TOKENS_PER_CHUNK]))
    for index, call in enumerate(completion.tool_calls):
        yield ToolCallDelta(index, call.id, call.name, call.arguments)
    yield StreamEnd(completion.finish_reason)
    yield UsageReport(completion.usage)


class StreamCollector:
    """Rebuilds a complete answer from a relayed stream, for the cache."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self.end: StreamEnd | None = None
        self.usage: UsageReport | None = None

    def observe(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(event.index, ["", "", ""])
            call[0] = event.id or call[0]
            call[1] = event.name or call[1]
            call[2] += event.arguments
        elif isinstance(event, StreamStart):
            self.id, self.model = event.id, event.model
        elif isinstance(event, StreamEnd):
            self.end = event
        elif isinstance(event, UsageReport):
            self.usage = event

    def completion(self) -> Completion | None:
        if self.end is None or self.usage is None:
            return None
        calls = tuple(ToolCall(*self.calls[i]) for i in sorted(self.calls))
        return Completion(
            self.id, self.model, "".join(self.text), self.end.finish_reason, self.usage.usage, calls
        )


__all__ = ["REPLAY_TOKENS_PER_CHUNK", "StreamCollector", "replay_events"]
