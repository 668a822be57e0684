"""The OpenAI chat-completions dialect (``POST /v1/chat/completions``).

The OpenAI request body *is* the canonical chat form, so parsing is
validation only; ``ChatRequest.chat`` and ``.body`` are the same dict.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from trioproxy.core.sse import encode_sse
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    Dialect,
    OutputItem,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from trioproxy.core.usage import openai_json
from trioproxy.dialects import _fields as f
from trioproxy.dialects.base import dialect_id
from trioproxy.dialects.openai_check import check_chat
from trioproxy.errors import GatewayError, invalid


def parse_request(body: bytes) -> ChatRequest:
    data = f.load_object(body)
    model = f.req_str(data, "model")
    check_chat(data)
    stream = bool(data.get("stream"))
    include_usage = bool(f.opt_dict(data, "stream_options").get("include_usage"))
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if stream and (data.get("n") or 1) > 1:
        raise invalid("'n' greater than 1 cannot be streamed through this gateway", "n")
    end_user = f.end_user(data, "user")
    return ChatRequest(
        dialect="openai",
        body=data,
        chat=data,
        model=model,
        stream=stream,
        include_usage=stream and include_usage,
        max_tokens=max_tokens,
        end_user=end_user,
    )


def render_completion(completion: Completion, req: ChatRequest) -> bytes:
    if completion.wire == "openai" and completion.native is not None:
        native = completion.native  # the provider's own body (the same wire)
        if completion.usage.estimated:  # it had no usage: what the ledger bills, as below
            native = {**native, "usage": openai_json(completion.usage)}
        return orjson.dumps(native)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
        "refusal": None,
    }
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in completion.tool_calls
        ]
    return orjson.dumps(
        {
            "id": dialect_id("chatcmpl-", completion.id),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": completion.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": openai_json(completion.usage),
        }
    )


def error_body(err: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": err.kind.info.openai_type,
            "param": err.param,
            "code": err.kind.value,
            **err.details,
        }
    }


def render_error(err: GatewayError) -> bytes:
    return orjson.dumps(error_body(err))


_DONE = b"data: [DONE]\n\n"


class OpenAIStreamEncoder:
    """Canonical events to ``chat.completion.chunk`` SSE events.

    Each chunk is a prebuilt byte prefix (id, created, model) plus the choice
    JSON. A usage report is held back until after the finish chunk, so the
    usage chunk (``choices: []``) is always last, as OpenAI sends it.
    """

    def __init__(self, req: ChatRequest, created: int | None = None) -> None:
        self._include_usage = req.include_usage
        self._created = int(time.time()) if created is None else created
        self._prefix = self._make_prefix("chatcmpl-trioproxy", req.model)
        self._ended = False
        self._usage: Usage | None = None

    def _make_prefix(self, id_: str, model: str) -> bytes:
        head = orjson.dumps(
            {"id": id_, "object": "chat.completion.chunk", "created": self._created, "model": model}
        )
        return b"data: " + head[:-1] + b',"choices":['

    def _choice(self, delta: bytes, finish: bytes = b"null") -> bytes:
        return (
            self._prefix
            + b'{"index":0,"delta":'
            + delta
            + b',"finish_reason":'
            + finish
            + b"}]}\n\n"
        )

    def _usage_chunk(self, usage: Usage) -> bytes:
        return self._prefix + b'],"usage":' + orjson.dumps(openai_json(usage)) + b"}\n\n"

    def encode(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            return self._choice(b'{"content":' + orjson.dumps(event.text) + b"}")
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            fn: dict[str, str] = {"arguments": event.arguments}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            if event.name is not None:
                fn["name"] = event.name
            call["function"] = fn
            return self._choice(b'{"tool_calls":[' + orjson.dumps(call) + b"]}")
        if isinstance(event, StreamStart):
            self._prefix = self._make_prefix(dialect_id("chatcmpl-", event.id), event.model)
            return self._choice(b'{"role":"assistant","content":""}')
        if isinstance(event, StreamEnd):
            self._ended = True
            out = self._choice(b"{}", orjson.dumps(event.finish_reason))
            return out + self._flush_usage()
        if isinstance(event, OutputItem):  # the Responses wire's own: no chat form
            return b""
        self._usage = event.usage
        return self._flush_usage() if self._ended else b""

    def _flush_usage(self) -> bytes:
        usage, self._usage = self._usage, None
        if usage is None or not self._include_usage:
            return b""
        return self._usage_chunk(usage)

    def finish(self) -> bytes:
        return self._flush_usage() + _DONE

    def error(self, err: GatewayError) -> bytes:
        return encode_sse(render_error(err))


class OpenAIDialect:
    name: Dialect = "openai"

    def parse_request(self, body: bytes) -> ChatRequest:
        return parse_request(body)

    def render_completion(self, completion: Completion, req: ChatRequest) -> bytes:
        return render_completion(completion, req)

    def new_stream_encoder(self, req: ChatRequest) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(req)

    def render_error(self, err: GatewayError) -> bytes:
        return render_error(err)


__all__ = ["OpenAIDialect", "OpenAIStreamEncoder", "parse_request", "render_completion"]
