"""Canonical stream events to Anthropic messages SSE events.

Anthropic's order is fixed: ``message_start``, then content blocks (each
``content_block_start``, deltas, ``content_block_stop``), then one
``message_delta`` carrying the stop reason and the final usage, then
``message_stop``. Blocks never interleave, but an upstream may interleave the argument
deltas of parallel tool calls (index 0, 1, 0, 1): the first call streams live, and a call
that starts while another's block is open is held whole and written as its own block
when the open one ends (a text delta or the end); a call whose block is closed takes no more
deltas (it opened a second, broken block for each switch). Upstreams deliver the stop reason and the usage in either
order, so the ``message_delta`` is held until both are known (or the stream
finishes). When the input usage is unknown at the start (OpenAI upstreams
report it last), ``message_start`` says 0 and the ``message_delta`` carries
the real counts (every bucket), which the Anthropic SDK takes as the final ones.
"""

from __future__ import annotations

from typing import Any

import orjson

from trioproxy.core.types import (
    ChatRequest,
    FinishReason,
    OutputItem,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from trioproxy.core.usage import anthropic_json
from trioproxy.dialects.base import dialect_id
from trioproxy.errors import GatewayError

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def error_body(err: GatewayError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": err.kind.info.anthropic_type, "message": err.message, **err.details},
    }


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_TEXT_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_JSON_DELTA = _TEXT_DELTA
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class AnthropicStreamEncoder:
    def __init__(self, req: ChatRequest) -> None:
        self._model = req.model
        self._started = False
        self._index = -1
        """Index of the open content block, or -1."""
        self._open_tool: int | None = None
        """Canonical tool-call index of the open ``tool_use`` block."""
        self._held: dict[int, list[Any]] = {}
        """Tool calls begun while another's block was open: index -> [id, name, args...]."""
        self._closed_tools: set[int] = set()
        self._open_text = False
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._delta_sent = False

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = b"" if self._open_text else self._start_block({"type": "text", "text": ""})
            self._open_text = True
            text = orjson.dumps(event.text)
            return (
                out
                + _TEXT_DELTA
                + self._idx()
                + b',"delta":{"type":"text_delta","text":'
                + text
                + b"}}\n\n"
            )
        if isinstance(event, ToolCallDelta):
            if event.index in self._held or (
                self._open_tool is not None and self._open_tool != event.index
            ):  # another call's block is open: this one waits, whole
                held = self._held.setdefault(event.index, [event.id, event.name])
                held[0], held[1] = held[0] or event.id, held[1] or event.name
                held.append(event.arguments)
                return b""
            if event.index in self._closed_tools:
                return b""  # its block ended (a text delta came between): nowhere to go
            out = b""
            if self._open_tool != event.index:
                out = self._start_tool(event.index, event.id, event.name)
            return out + self._json_delta(event.arguments)
        if isinstance(event, StreamStart):
            return self._message_start(event)
        if isinstance(event, StreamEnd):
            self._finish = event.finish_reason
            out = self._close_block()
            return out + self._message_delta() if self._usage is not None else out
        if isinstance(event, OutputItem):  # the Responses wire's own: no messages form
            return b""
        self._usage = event.usage
        return self._message_delta() if self._finish is not None else b""

    def finish(self) -> bytes:
        return self._close_block() + self._message_delta() + _MESSAGE_STOP

    def error(self, err: GatewayError) -> bytes:
        return _event(b"error", error_body(err))

    # --- helpers -----------------------------------------------------------

    def _idx(self) -> bytes:
        return str(self._index).encode()

    def _message_start(self, event: StreamStart | None) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": dialect_id("msg_", event.id) if event else "msg_trioproxy",
            "type": "message",
            "role": "assistant",
            "model": event.model if event else self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_json((event.usage if event else None) or Usage(0, 0)),
        }
        return _event(b"message_start", {"type": "message_start", "message": message})

    def _start_block(self, block: dict[str, Any]) -> bytes:
        out = self._message_start(None) + self._close_block()
        self._index += 1
        payload = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + _event(b"content_block_start", payload)

    def _start_tool(self, index: int, call_id: str | None, name: str | None) -> bytes:
        block = {"type": "tool_use", "id": call_id or f"toolu_{index}", "name": name or "",
                 "input": {}}  # fmt: skip
        out = self._start_block(block)
        self._open_tool = index
        return out

    def _json_delta(self, arguments: str) -> bytes:
        if not arguments:
            return b""
        partial = orjson.dumps(arguments)
        out = _JSON_DELTA + self._idx()
        return out + b',"delta":{"type":"input_json_delta","partial_json":' + partial + b"}}\n\n"

    def _close_block(self) -> bytes:
        if not (self._open_text or self._open_tool is not None):
            return b""
        if self._open_tool is not None:
            self._closed_tools.add(self._open_tool)
        self._open_text = False
        self._open_tool = None
        out = _STOP + self._idx() + b"}\n\n"
        held, self._held = self._held, {}
        for index, (call_id, name, *pieces) in held.items():  # in the order they began
            out += self._start_tool(index, call_id, name) + self._json_delta("".join(pieces))
            self._closed_tools.add(index)
            self._open_tool = None
            out += _STOP + self._idx() + b"}\n\n"
        return out

    def _message_delta(self) -> bytes:
        if self._delta_sent:
            return b""
        self._delta_sent = True
        out = self._message_start(None)
        usage: dict[str, Any] = {"output_tokens": 0}
        if self._usage is not None:
            usage = anthropic_json(self._usage)
        delta = {"stop_reason": STOP_REASONS[self._finish or "stop"], "stop_sequence": None}
        return out + _event(
            b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
        )


__all__ = ["STOP_REASONS", "AnthropicStreamEncoder", "error_body"]
