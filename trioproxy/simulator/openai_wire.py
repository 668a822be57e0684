"""OpenAI chat completions, as the simulator writes them.

Streams are ``data: <chat.completion.chunk>`` events: a role chunk, one chunk
per token, a chunk with ``finish_reason``, a usage chunk with ``choices: []``
iff ``stream_options.include_usage``, then ``data: [DONE]``. As OpenAI does,
when usage is requested every other chunk carries ``"usage": null``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from trioproxy.core.tokens import prompt_tokens
from trioproxy.simulator.plan import (
    REASONING_MODEL,
    BadRequest,
    Intent,
    Plan,
    checked_max_tokens,
    checked_messages,
    checked_model,
    first_property,
    last_user_text,
    odd_counts,
    thinking_pieces,
    wants_tool,
)
from trioproxy.simulator.prompt_cache import openai_prompt
from trioproxy.simulator.structured import requested_json

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "unknown_url", "Not found."),
    413: ("invalid_request_error", None, "Request too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _tool_name_and_key(tool: Any) -> tuple[str, str]:
    fn = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise BadRequest("tools.0.function.name: field required")
    return fn["name"], first_property(fn.get("parameters"))


def _usage(plan: Plan) -> dict[str, Any]:
    out = plan.billed_output * plan.choices
    return odd_counts({
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": out,
        "total_tokens": plan.input_tokens + out,
        "prompt_tokens_details": {"cached_tokens": plan.cache.read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens * plan.choices,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }, plan.odd_usage)  # fmt: skip


MAX_CHOICES = 128
"""OpenAI's bound on ``n``."""


class OpenAIWire:
    name = "openai"
    path = "/v1/chat/completions"
    end_event = b"data: [DONE]\n\n"

    def parse(self, body: Any) -> Intent:
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object")
        model = checked_model(body)
        messages = checked_messages(body)
        max_tokens = checked_max_tokens(body.get("max_completion_tokens"), "max_completion_tokens")
        if max_tokens is None:
            max_tokens = checked_max_tokens(body.get("max_tokens"), "max_tokens")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = (
            stream and isinstance(options, Mapping) and options.get("include_usage") is True
        )
        tool = None
        if body.get("tool_choice") != "none":
            tool = wants_tool(messages, body.get("tools"), _tool_name_and_key)
        total = prompt_tokens(messages)
        n = checked_max_tokens(body.get("n"), "n") or 1
        if n > MAX_CHOICES or (stream and n > 1):
            raise BadRequest(f"n: at most {MAX_CHOICES}, and 1 when streaming")
        return Intent(
            model, total, last_user_text(messages), max_tokens, stream, include_usage, tool,
            openai_prompt(body, total), bool(REASONING_MODEL.match(model)), choices=n,
            json_schema=requested_json(body),
        )  # fmt: skip

    def error_body(self, status: int, message: str) -> bytes:
        kind, code, default = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "")
        )
        error = {"message": message or default, "type": kind, "param": None, "code": code}
        return orjson.dumps({"error": error})

    def completion(self, plan: Plan) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": None}
        if plan.tool_name is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": "call_" + plan.tool_id,
                    "type": "function",
                    "function": {"name": plan.tool_name, "arguments": plan.text},
                }
            ]
        return orjson.dumps(
            {
                "id": plan.id,
                "object": "chat.completion",
                "created": plan.created,
                "model": plan.model,
                "choices": [
                    {
                        "index": i,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": plan.finish,
                    }
                    for i in range(plan.choices)
                ],
                **({} if plan.no_usage else {"usage": _usage(plan)}),
                "system_fingerprint": "fp_trioproxy_sim",
            }
        )

    def _prefix(self, plan: Plan) -> bytes:
        return (
            b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            b'"system_fingerprint":"fp_trioproxy_sim","choices":[{"index":0,"delta":'
            % (plan.id.encode(), plan.created, orjson.dumps(plan.model))
        )

    def _suffix(self, plan: Plan, finish: str | None) -> bytes:
        reason = b"null" if finish is None else orjson.dumps(finish)
        usage = b',"usage":null' if plan.include_usage else b""
        return b',"logprobs":null,"finish_reason":%s}]%s}\n\n' % (reason, usage)

    def stream_head(self, plan: Plan) -> bytes:
        prefix, suffix = self._prefix(plan), self._suffix(plan, None)
        if plan.tool_name is None:
            return prefix + b'{"role":"assistant","content":"","refusal":null}' + suffix
        call = {
            "index": 0,
            "id": "call_" + plan.tool_id,
            "type": "function",
            "function": {"name": plan.tool_name, "arguments": ""},
        }
        role = prefix + b'{"role":"assistant","content":null,"refusal":null}' + suffix
        return role + prefix + orjson.dumps({"tool_calls": [call]}) + suffix

    def chunk_encoder(self, plan: Plan) -> Callable[[str], bytes]:
        prefix, suffix, dumps = self._prefix(plan), self._suffix(plan, None), orjson.dumps
        if plan.tool_name is not None:
            prefix += b'{"tool_calls":[{"index":0,"function":{"arguments":'
            suffix = b"}}]}" + suffix
        else:
            prefix += b'{"content":'
            suffix = b"}" + suffix

        def encode(piece: str) -> bytes:
            return prefix + dumps(piece) + suffix

        return encode

    def stream_prelude(self, plan: Plan) -> list[bytes]:
        """The reasoning as ``reasoning_content`` deltas (the ``reasoning_content`` fault)."""
        if not (plan.stream_reasoning and plan.reasoning_tokens):
            return []
        prefix, suffix = self._prefix(plan), self._suffix(plan, None)
        return [
            prefix + b'{"reasoning_content":' + orjson.dumps(piece) + b"}" + suffix
            for piece in thinking_pieces(plan)
        ]

    def stream_tail(self, plan: Plan) -> bytes:
        tail = self._prefix(plan) + b"{}" + self._suffix(plan, plan.finish)
        if plan.include_usage:
            usage = {
                "id": plan.id,
                "object": "chat.completion.chunk",
                "created": plan.created,
                "model": plan.model,
                "system_fingerprint": "fp_trioproxy_sim",
                "choices": [],
                "usage": _usage(plan),
            }
            tail += b"data: " + orjson.dumps(usage) + b"\n\n"
        return tail + self.end_event


OPENAI = OpenAIWire()

__all__ = ["OPENAI", "OpenAIWire"]
