"""Reading a stream that is relayed as it is (caller dialect = provider wire). Pure.

When the caller speaks the provider's wire, the gateway forwards the upstream
SSE bytes unchanged, cut at event boundaries, instead of decoding every event
into canonical values and encoding it again. :class:`PassthroughTap` is fed
the upstream body bytes and returns, per call, the complete events to forward
and what the gateway must know from them:

* the *special* events are decoded by the provider's own stream decoder: the
  first event, usage, errors, the finish reason, the final event (``[DONE]`` /
  ``message_stop``), tool calls, anything unusual (so the decoder's checks and
  state hold);
* the *plain* content events (a text or argument delta, the bulk of a stream)
  are only metered: their delta text is read to count its tokens with
  :func:`~trioproxy.core.tokens.estimate_tokens`, exactly as the decoder path
  counts them, so an interrupted stream bills exactly what was delivered. No
  canonical events, no re-encoding.

Line ends are normalised to LF (CRLF / CR framing from OpenAI-compatible
servers becomes LF framing: the same events). An OpenAI usage-only chunk is
left out when the caller did not ask for usage (the gateway always asks
upstream), as the decoding path leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from trioproxy.core.sse import SSEParser
from trioproxy.core.tokens import estimate_tokens
from trioproxy.core.types import Dialect, StreamEvent, UsageReport
from trioproxy.providers.anthropic import AnthropicStreamDecoder
from trioproxy.providers.base import StreamDecoder
from trioproxy.providers.openai import OpenAIStreamDecoder

_OPENAI_DATA = b"data: {"
_ANTHROPIC_TEXT = b'event: content_block_delta\ndata: {"type":"content_block_delta"'
_ANTHROPIC_DATA = len(b"event: content_block_delta\ndata: ")


@dataclass(slots=True)
class Tapped:
    forward: bytes = b""
    """Complete events to relay as they are (may be empty)."""
    events: list[StreamEvent] = field(default_factory=list)
    """What the special events decoded to (start, usage, end...)."""
    output_tokens: int = 0
    """Estimated tokens of the plain content events in ``forward``."""
    content_events: int = 0


class PassthroughTap:
    """Per-stream state; ``feed`` raises ``ValueError`` on garbage and the decoder's
    :class:`~trioproxy.errors.ProviderError` on an upstream error event."""

    WIRES: frozenset[Dialect] = frozenset({"openai", "anthropic"})
    """The wires relayed verbatim (the Responses API streams go through the decoder)."""

    def __init__(self, wire: Dialect, *, include_usage: bool) -> None:
        if wire not in self.WIRES:
            raise ValueError(f"no passthrough for the {wire!r} wire")
        self.wire = wire
        self._decoder: StreamDecoder = (
            OpenAIStreamDecoder() if wire == "openai" else AnthropicStreamDecoder()
        )
        self._parser = SSEParser()
        self._drop_usage = wire == "openai" and not include_usage
        self._rest = b""
        self._cr = False
        """The previous input ended in CR (a CRLF may be split across reads)."""
        self._first = True

    @property
    def done(self) -> bool:
        return self._decoder.done

    def _normalise(self, data: bytes) -> bytes:
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def feed(self, data: bytes) -> Tapped:
        out = Tapped()
        if self.done or not data:
            return out
        data = self._normalise(data)
        buf = self._rest + data if self._rest else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._rest = buf
            return out
        block, self._rest = buf[: end + 2], buf[end + 2 :]
        events = block.split(b"\n\n")
        events.pop()  # after the last separator: empty
        kept: list[bytes] = []
        edited = False
        for n, ev in enumerate(events):
            if not ev:
                continue  # extra blank lines between events
            tokens = None if self._first else self._plain_tokens(ev)
            if tokens is not None:
                out.output_tokens += tokens
                out.content_events += 1
                kept.append(ev)
                continue
            self._first = False
            decoded = self._decode(ev)
            out.events.extend(decoded)
            if self._drop_usage and self._usage_only(decoded, ev):
                edited = True
            else:
                kept.append(ev)
            if self.done:
                edited = edited or n + 1 < len(events)
                self._rest = b""
                break
        out.forward = b"".join(ev + b"\n\n" for ev in kept) if edited else block
        return out

    def _decode(self, ev: bytes) -> list[StreamEvent]:
        decoded: list[StreamEvent] = []
        for sse in self._parser.feed(ev + b"\n\n"):
            decoded.extend(self._decoder.feed(sse))
        return decoded

    @staticmethod
    def _usage_only(decoded: list[StreamEvent], ev: bytes) -> bool:
        return any(isinstance(e, UsageReport) for e in decoded) and b'"choices":[]' in ev

    def _plain_tokens(self, ev: bytes) -> int | None:
        """Tokens of a plain content event, or None when the event must be decoded."""
        if self.wire == "openai":
            if (
                not ev.startswith(_OPENAI_DATA)
                or b"\n" in ev
                or b'"error"' in ev
                or b'"usage":{' in ev
                or b'"tool_calls"' in ev
                or (b'"finish_reason":' in ev and b'"finish_reason":null' not in ev)
            ):
                return None
            return _openai_tokens(orjson.loads(ev[6:]))
        if not ev.startswith(_ANTHROPIC_TEXT) or b'"text_delta"' not in ev or ev.count(b"\n") != 1:
            return None
        data = orjson.loads(ev[_ANTHROPIC_DATA:])
        delta = data.get("delta") if isinstance(data, dict) else None
        if not isinstance(delta, dict) or delta.get("type") != "text_delta":
            return None
        text = delta.get("text")
        if not isinstance(text, str):
            raise ValueError("malformed content_block_delta: text is not a string")
        return estimate_tokens(text)


def _openai_tokens(chunk: Any) -> int:
    """Tokens of choice 0's content delta (what the decoder would meter)."""
    if not isinstance(chunk, dict):
        raise ValueError("expected a JSON object")
    tokens = 0
    try:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0 and (text := (choice.get("delta") or {}).get("content")):
                tokens += estimate_tokens(text)
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"malformed chunk: {exc!r}") from None
    return tokens


__all__ = ["PassthroughTap", "Tapped"]
