"""What a verbatim Responses stream keeps so that the gateway can end it itself (pure).

A Responses caller on a Responses upstream gets the provider's events as they came
(:mod:`trioproxy.providers.passthrough`). When the gateway has to end such a stream (the
upstream broke, a budget stopped it) its last event must continue the provider's stream: the
provider's response object, the next sequence number, the output items done so far and the
open ones as ``incomplete`` with what they had. :class:`ResponsesTrail` is the Responses
stream decoder that keeps those (from the special events it decodes, and from the plain text
deltas when the tap counts them: :meth:`ResponsesTrail.take_deltas`) and writes that event
(:meth:`ResponsesTrail.failure_event`); :func:`with_usage` puts the usage the ledger bills into
a terminal event whose own usage was no usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from trioproxy.core.sse import event_bytes, json_event
from trioproxy.core.tokens import estimate_tokens
from trioproxy.core.types import StreamEvent, Usage
from trioproxy.core.usage import responses_json
from trioproxy.errors import ErrorKind, GatewayError
from trioproxy.providers.openai_responses import ResponsesStreamDecoder

KEEP_BYTES = 1024 * 1024
"""JSON bytes of finished output items kept for the gateway's last event; past them an item is
kept as its id, type and status (a hosted tool's item carries its output: 40 generated images
of 256 KiB kept 10 MiB per stream). The caller has every item whole from its own
``response.output_item.done``."""


class ResponsesTrail(ResponsesStreamDecoder):
    """The Responses stream decoder, keeping what the gateway needs to end the stream itself
    (:meth:`failure_event`): the provider's response object, the last sequence
    number, the items done and those still open (with their text or arguments so far). Only
    the special events come here; the plain text deltas' text is added when they are counted
    (:meth:`take_deltas`)."""

    def __init__(self) -> None:
        super().__init__()
        self.response: dict[str, Any] | None = None
        self.seq = -1
        self.done_items: list[Any] = []
        self.kept = 0
        """JSON bytes of :attr:`done_items` (at most :data:`KEEP_BYTES` kept whole)."""
        self.open: dict[str, dict[str, Any]] = {}
        """Output item id -> the item as added."""
        self.texts: dict[str, list[str]] = {}
        """Output item id (open) -> its text (a message) or arguments (a call) so far."""

    def take_deltas(self, pending: Iterable[bytes], skip: int) -> int:
        """The tokens of plain text deltas (each event's JSON from ``skip``), their text kept
        for the open items (one piece per item per batch) and the last sequence number."""
        tokens = 0
        texts: dict[str, list[str]] = {}
        for ev in pending:
            try:
                data = orjson.loads(ev[skip:])
            except ValueError:
                continue  # forwarded as it came; counts nothing
            if not isinstance(data, dict):
                continue
            delta = data.get("delta")
            if not isinstance(delta, str):
                continue
            tokens += estimate_tokens(delta)
            seq = data.get("sequence_number")
            if isinstance(seq, int) and seq > self.seq:
                self.seq = seq
            item = data.get("item_id")
            if isinstance(item, str) and item in self.texts:
                texts.setdefault(item, []).append(delta)
        for item, pieces in texts.items():
            self.texts[item].append("".join(pieces))
        return tokens

    def failure_event(self, err: GatewayError, usage: Usage) -> bytes:
        """The event that ends a stream the gateway cuts (``err``): a ``response.incomplete``
        for a budget or a rate limit, else ``response.failed``, as the decoding path's encoder
        says, but continuing the provider's stream, with ``usage`` (what the ledger bills).
        Empty when the provider's ``response.created`` never came: the caller's encoder ends
        it."""
        if self.response is None:
            return b""
        output = [*self.done_items]
        output.extend(_incomplete(item, self.texts.get(i, ())) for i, item in self.open.items())
        budget = err.kind in (ErrorKind.BUDGET_EXCEEDED, ErrorKind.RATE_LIMITED)
        status = "incomplete" if budget else "failed"
        response = {
            **self.response,
            "status": status,
            "incomplete_details": {"reason": err.kind.value} if budget else None,
            "output": output,
            "error": {"code": err.kind.value, "message": err.message},
            "usage": responses_json(usage),
        }
        self.seq += 1
        kind = "response." + status
        data = {"type": kind, "sequence_number": self.seq, "response": response}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def decode(self, data: dict[str, Any]) -> list[StreamEvent]:
        out = super().decode(data)  # an error event raises: the gateway's event takes its place
        seq = data.get("sequence_number")
        if isinstance(seq, int) and seq > self.seq:
            self.seq = seq
        kind = data.get("type")
        if kind == "response.created" and isinstance(data.get("response"), dict):
            self.response = data["response"]
        elif kind == "response.output_item.added" or kind == "response.output_item.done":
            item = data.get("item")
            if isinstance(item, dict) and isinstance(key := item.get("id"), str):
                if kind == "response.output_item.added":
                    self.open[key], self.texts[key] = item, []
                else:
                    self.open.pop(key, None)
                    self.texts.pop(key, None)
                    self.done_items.append(self._bounded(item))
        elif kind in _PIECES:
            key, delta = data.get("item_id"), data.get("delta")
            pieces = self.texts.get(key) if isinstance(key, str) else None
            if pieces is not None and isinstance(delta, str):
                pieces.append(delta)
        return out

    def _bounded(self, item: dict[str, Any]) -> dict[str, Any]:
        """``item``, or its id, type and status once :data:`KEEP_BYTES` are kept."""
        size = len(orjson.dumps(item))
        if self.kept + size > KEEP_BYTES:
            return {k: item[k] for k in ("id", "type", "status") if k in item}
        self.kept += size
        return item


_PIECES = ("response.output_text.delta", "response.function_call_arguments.delta")


def _incomplete(item: dict[str, Any], pieces: Iterable[str]) -> dict[str, Any]:
    """An open output item as the stream left it: ``incomplete``, with its text (a message)
    or its arguments (a function call) so far."""
    out = {**item, "status": "incomplete"}
    if item.get("type") == "message":
        text = "".join(pieces)
        out["content"] = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    elif item.get("type") == "function_call":
        out["arguments"] = str(item.get("arguments") or "") + "".join(pieces)
    return out


def with_usage(ev: bytes, usage: Usage) -> bytes:
    """A Responses terminal event (without its blank line, as the tap took it) with
    ``usage`` in its response object instead of the provider's, which was no usage."""
    head, data = json_event(ev)
    data["response"]["usage"] = responses_json(usage)
    return event_bytes(head, data) + b"\n\n"


__all__ = ["ResponsesTrail", "with_usage"]
