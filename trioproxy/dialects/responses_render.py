"""The OpenAI Responses dialect: answers, streams and errors.

A whole answer is one ``response`` object. A stream is typed ``response.*``
events, each ``event: <type>`` + ``data: <json>`` with a ``sequence_number``:
``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` … ``response.output_item.done`` (a message
item with ``response.content_part.added``, ``response.output_text.delta`` …
``.done``, ``response.content_part.done``; a function call with
``response.function_call_arguments.delta`` … ``.done``), and one terminal
event: ``response.completed``, ``response.incomplete`` (the model hit
``max_output_tokens``, or the gateway's budget stopped the stream) or
``response.failed`` (the stream broke). The terminal event carries the whole
response with the usage so far; a broken stream never ends in
``response.completed``. Errors before the stream use OpenAI's envelope.

A stream from a Responses upstream is relayed as the provider sent it
(:mod:`trioproxy.providers.passthrough`) unless the cache needs it decoded: this
encoder writes translated streams (chat and Anthropic upstreams), decoded ones and
cache hits.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from trioproxy.core.tokens import estimate_tokens, prompt_tokens
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    Dialect,
    FinishReason,
    OutputItem,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from trioproxy.core.usage import responses_json, with_output
from trioproxy.dialects.openai import render_error
from trioproxy.dialects.responses import parse_request
from trioproxy.errors import ErrorKind, GatewayError

_INCOMPLETE: dict[FinishReason, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def usage_json(usage: Usage) -> dict[str, Any]:
    """Usage in the Responses shape (:func:`trioproxy.core.usage.responses_json`)."""
    return responses_json(usage)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name,
            "arguments": call.arguments, "status": status}  # fmt: skip


def response_object(
    req: ChatRequest,
    *,
    rid: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete: str | None = None,
    error: GatewayError | None = None,
) -> dict[str, Any]:
    """The ``response`` object; request settings are echoed from the caller's body."""
    body = req.body
    done = status in ("completed", "incomplete", "failed")
    return {
        "id": rid, "object": "response", "created_at": created_at,
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        "model": model, "previous_response_id": None,
        "instructions": body.get("instructions"), "output": output,
        "error": None if error is None else {"code": error.kind.value, "message": error.message},
        "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
        "truncation": body.get("truncation", "disabled"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "text": body.get("text") or {"format": {"type": "text"}},
        "top_p": body.get("top_p", 1.0), "temperature": body.get("temperature", 1.0),
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0,
        "reasoning": body.get("reasoning"), "user": body.get("user"),
        "usage": usage_json(usage) if usage is not None and done else None,
        "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
        "store": False, "background": False, "service_tier": "default",
        "metadata": body.get("metadata") or {}, "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
    }  # fmt: skip


def render_completion(completion: Completion, req: ChatRequest) -> bytes:
    if completion.wire == "responses" and completion.native is not None:
        return orjson.dumps(completion.native)
    output: list[dict[str, Any]] = []
    if completion.text or not completion.tool_calls:
        output.append(message_item(new_id("msg_"), completion.text, "completed"))
    output.extend(call_item(new_id("fc_"), c, "completed") for c in completion.tool_calls)
    incomplete = _INCOMPLETE.get(completion.finish_reason)
    rid = completion.id if completion.id.startswith("resp_") else new_id("resp_")
    return orjson.dumps(
        response_object(
            req,
            rid=rid,
            model=completion.model,
            created_at=int(time.time()),
            status="completed" if incomplete is None else "incomplete",
            output=output,
            usage=completion.usage,
            incomplete=incomplete,
        )
    )


class ResponsesStreamEncoder:
    """Canonical stream events to typed ``response.*`` SSE events (see the module doc)."""

    def __init__(self, req: ChatRequest, created_at: int | None = None) -> None:
        self._req = req
        self._created_at = int(time.time()) if created_at is None else created_at
        self._rid = new_id("resp_")
        self._model = req.model
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        """Finished output items."""
        self._text: list[str] | None = None
        """The open message item's text so far (None: no message item open)."""
        self._text_id = ""
        self._calls: dict[int, tuple[int, str, list[str]]] = {}
        """Canonical call index -> (output index, item id, argument pieces)."""
        self._call_meta: dict[int, tuple[str, str]] = {}
        self._done_calls: set[int] = set()
        """Calls whose item is done: a late delta has no item to go to."""
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._input = Usage(prompt_tokens(req.chat.get("messages", [])), 0)
        """The prompt's usage: estimated, or the provider's when it reports it up front."""
        self._out_tokens = 0

    # --- framing --------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            self._req, rid=self._rid, model=self._model, created_at=self._created_at,
            status=status, output=list(self._output), usage=self._usage, **extra,
        )  # fmt: skip

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event("response.created", response=self._snapshot("in_progress")) + (
            self._event("response.in_progress", response=self._snapshot("in_progress"))
        )

    # --- items ---------------------------------------------------------------

    def _open_text(self) -> bytes:
        if self._text is not None:
            return b""
        self._text, self._text_id = [], new_id("msg_")
        index = len(self._output)
        item = message_item(self._text_id, None, "in_progress")
        return self._event("response.output_item.added", output_index=index, item=item) + (
            self._event("response.content_part.added", item_id=self._text_id,
                        output_index=index, content_index=0, part=text_part(""))
        )  # fmt: skip

    def _close_text(self, status: str) -> bytes:
        if self._text is None:
            return b""
        text, self._text = "".join(self._text), None
        index, item_id = len(self._output), self._text_id
        item = message_item(item_id, text, status)
        self._output.append(item)
        return (
            self._event("response.output_text.done", item_id=item_id, output_index=index,
                        content_index=0, text=text, logprobs=[])
            + self._event("response.content_part.done", item_id=item_id, output_index=index,
                          content_index=0, part=text_part(text))
            + self._event("response.output_item.done", output_index=index, item=item)
        )  # fmt: skip

    def _call_delta(self, event: ToolCallDelta) -> bytes:
        out = b""
        if event.index not in self._calls:
            if event.index in self._done_calls:
                return b""  # its item is done (text came between): nowhere to go
            # other calls stay open: an upstream may interleave parallel calls' deltas
            out += self._close_text("completed")
            item_id = new_id("fc_")
            index = len(self._output) + len(self._calls)
            self._calls[event.index] = (index, item_id, [])
            self._call_meta[event.index] = (event.id or new_id("call_"), event.name or "")
            call = ToolCall(*self._call_meta[event.index], "")
            out += self._event("response.output_item.added", output_index=index,
                               item=call_item(item_id, call, "in_progress"))  # fmt: skip
        index, item_id, pieces = self._calls[event.index]
        if event.arguments:
            pieces.append(event.arguments)
            self._out_tokens += estimate_tokens(event.arguments)
            out += self._event("response.function_call_arguments.delta", item_id=item_id,
                               output_index=index, delta=event.arguments)  # fmt: skip
        return out

    def _close_calls(self, status: str) -> bytes:
        out = b""
        for key in sorted(self._calls, key=lambda k: self._calls[k][0]):  # output order
            self._done_calls.add(key)
            index, item_id, pieces = self._calls[key]
            call_id, name = self._call_meta[key]
            call = ToolCall(call_id, name, "".join(pieces))
            item = call_item(item_id, call, status)
            self._output.append(item)
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=name,
                arguments=call.arguments,
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._calls.clear()
        return out

    # --- the StreamEncoder protocol -------------------------------------------

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = self._start() + self._close_calls("completed") + self._open_text()
            assert self._text is not None
            self._text.append(event.text)
            self._out_tokens += estimate_tokens(event.text)
            return out + self._event("response.output_text.delta", item_id=self._text_id,
                                     output_index=len(self._output), content_index=0,
                                     delta=event.text, logprobs=[])  # fmt: skip
        if isinstance(event, ToolCallDelta):
            return self._start() + self._call_delta(event)
        if isinstance(event, StreamStart):
            self._model = event.model or self._model
            if event.usage is not None:
                self._input = event.usage
            return self._start()
        if isinstance(event, StreamEnd):
            self._finish = event.finish_reason
            return b""
        if isinstance(event, OutputItem):  # a reasoning item, whole: added, then done
            out = self._start() + self._close_text("completed") + self._close_calls("completed")
            index = len(self._output)
            self._output.append(event.item)
            return out + (
                self._event("response.output_item.added", output_index=index, item=event.item)
                + self._event("response.output_item.done", output_index=index, item=event.item)
            )
        self._usage = event.usage
        return b""

    def finish(self) -> bytes:
        if self._usage is None:
            self._usage = with_output(self._input, self._out_tokens, estimated=True)
        incomplete = _INCOMPLETE.get(self._finish or "stop")
        out = self._start() + self._close_text("completed") + self._close_calls("completed")
        if incomplete is not None:
            return out + self._event(
                "response.incomplete", response=self._snapshot("incomplete", incomplete=incomplete)
            )
        return out + self._event("response.completed", response=self._snapshot("completed"))

    def error(self, err: GatewayError) -> bytes:
        """The stream broke (``response.failed``) or a budget stopped it
        (``response.incomplete``); either way with the partial output and usage."""
        if self._usage is None:
            self._usage = with_output(self._input, self._out_tokens, estimated=True)
        out = self._start() + self._close_text("incomplete") + self._close_calls("incomplete")
        if err.kind in (ErrorKind.BUDGET_EXCEEDED, ErrorKind.RATE_LIMITED):
            snapshot = self._snapshot("incomplete", incomplete=err.kind.value, error=err)
            return out + self._event("response.incomplete", response=snapshot)
        return out + self._event("response.failed", response=self._snapshot("failed", error=err))


class ResponsesDialect:
    name: Dialect = "responses"

    def parse_request(self, body: bytes) -> ChatRequest:
        return parse_request(body)

    def render_completion(self, completion: Completion, req: ChatRequest) -> bytes:
        return render_completion(completion, req)

    def new_stream_encoder(self, req: ChatRequest) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(req)

    def render_error(self, err: GatewayError) -> bytes:
        return render_error(err)


__all__ = [
    "ResponsesDialect",
    "ResponsesStreamEncoder",
    "render_completion",
    "response_object",
    "usage_json",
]
