"""Anthropic messages, as the simulator writes them.

Streams are ``event: <type>\\ndata: <json>\\n\\n`` events in Anthropic's order:
``message_start`` (input tokens, output 1), ``content_block_start``, ``ping``,
one ``content_block_delta`` per token, ``content_block_stop``,
``message_delta`` (stop reason, cumulative output tokens), ``message_stop``.
With ``thinking`` enabled, a thinking block comes first (index 0: one ``thinking_delta`` per
thinking token, paced as content chunks are, then its signature), :data:`~.plan.
REASONING_PER_TOKEN` thinking tokens per visible one, billed as output, and the answer's
block is index 1.
The ``system`` prompt counts as one more message for input tokens. A structured-output
request (``output_config.format``) gets JSON following its schema, and so does one whose
system prompt asks for a JSON object (and names a JSON Schema), as a model following it would
(:func:`~.structured.anthropic_json`). ``usage`` splits the
prompt into uncached input, cache reads and 5-minute / 1-hour cache writes
(:mod:`.prompt_cache`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from trioproxy.core.tokens import prompt_tokens
from trioproxy.simulator.plan import (
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
from trioproxy.simulator.prompt_cache import anthropic_prompt
from trioproxy.simulator.structured import anthropic_json

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _thinks(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def _signature(plan: Plan) -> str:
    return "sig_" + plan.id[-16:]


def _index(plan: Plan) -> int:
    """The answer block's index: after the thinking block, if any."""
    return 1 if plan.reasoning_tokens else 0


def _tool_name_and_key(tool: Any) -> tuple[str, str]:
    if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
        raise BadRequest("tools.0.name: Field required")
    return tool["name"], first_property(tool.get("input_schema"))


def _usage(plan: Plan, output_tokens: int, *, first: bool = False) -> dict[str, Any]:
    c = plan.cache
    return odd_counts({
        "input_tokens": plan.uncached_input,
        "cache_creation_input_tokens": c.write_5m + c.write_1h,
        "cache_read_input_tokens": c.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": c.write_5m,
            "ephemeral_1h_input_tokens": c.write_1h,
        },
        "output_tokens": output_tokens,
    }, None if first and plan.odd_late else plan.odd_usage)  # fmt: skip


def _event(kind: str, data: Mapping[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps(data))


class AnthropicWire:
    name = "anthropic"
    path = "/v1/messages"
    end_event = _event("message_stop", {"type": "message_stop"})

    def parse(self, body: Any) -> Intent:
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object")
        model = checked_model(body)
        messages = checked_messages(body)
        if body.get("max_tokens") is None:
            raise BadRequest("max_tokens: Field required")
        max_tokens = checked_max_tokens(body.get("max_tokens"), "max_tokens")
        system = body.get("system")
        counted = [{"role": "system", "content": system}, *messages] if system else messages
        tool = None
        choice = body.get("tool_choice")
        if not (isinstance(choice, Mapping) and choice.get("type") == "none"):
            tool = wants_tool(messages, body.get("tools"), _tool_name_and_key)
        stream = body.get("stream") is True
        return Intent(
            model, prompt_tokens(counted), last_user_text(messages), max_tokens, stream, stream,
            tool, anthropic_prompt(body), reasoning=_thinks(body),
            json_schema=anthropic_json(body),
        )  # fmt: skip

    def error_body(self, status: int, message: str) -> bytes:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return orjson.dumps(
            {"type": "error", "error": {"type": kind, "message": message or kind.replace("_", " ")}}
        )

    def _content(self, plan: Plan) -> dict[str, Any]:
        if plan.tool_name is None:
            return {"type": "text", "text": plan.text}
        return {
            "type": "tool_use",
            "id": "toolu_" + plan.tool_id,
            "name": plan.tool_name,
            "input": orjson.loads(plan.text),
        }

    @staticmethod
    def _thinking(plan: Plan) -> list[dict[str, Any]]:
        if not plan.reasoning_tokens:
            return []
        text = "".join(thinking_pieces(plan))
        return [{"type": "thinking", "thinking": text, "signature": _signature(plan)}]

    def completion(self, plan: Plan) -> bytes:
        return orjson.dumps(
            {
                "id": plan.id,
                "type": "message",
                "role": "assistant",
                "model": plan.model,
                "content": [*self._thinking(plan), self._content(plan)],
                "stop_reason": _STOP[plan.finish],
                "stop_sequence": None,
                "usage": _usage(plan, plan.billed_output),
            }
        )

    def stream_head(self, plan: Plan) -> bytes:
        message: dict[str, Any] = {
            "id": plan.id,
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(plan, 1, first=True),
        }
        head = _event("message_start", {"type": "message_start", "message": message})
        if plan.reasoning_tokens:  # the answer's block starts after the thinking (prelude)
            return head
        return head + self._block_start(plan)

    def _block_start(self, plan: Plan) -> bytes:
        block = self._content(plan)
        if plan.tool_name is None:
            block["text"] = ""
        else:
            block["input"] = {}
        start = {"type": "content_block_start", "index": _index(plan), "content_block": block}
        return _event("content_block_start", start) + b'event: ping\ndata: {"type": "ping"}\n\n'

    def stream_prelude(self, plan: Plan) -> list[bytes]:
        if not plan.reasoning_tokens:
            return []
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in thinking_pieces(plan)]
        deltas.append({"type": "signature_delta", "signature": _signature(plan)})
        return [
            _event("content_block_start",
                   {"type": "content_block_start", "index": 0, "content_block": start}),
            *(_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
              for d in deltas),
            _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + self._block_start(plan),
        ]  # fmt: skip

    def chunk_encoder(self, plan: Plan) -> Callable[[str], bytes]:
        kind, field = (
            ("text_delta", "text")
            if plan.tool_name is None
            else ("input_json_delta", "partial_json")
        )
        prefix = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
            b'"delta":{"type":"%s","%s":' % (_index(plan), kind.encode(), field.encode())
        )
        suffix = b"}}\n\n"
        dumps = orjson.dumps

        def encode(piece: str) -> bytes:
            return prefix + dumps(piece) + suffix

        return encode

    def stream_tail(self, plan: Plan) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[plan.finish], "stop_sequence": None},
            "usage": odd_counts({"output_tokens": plan.billed_output}, plan.odd_usage),
        }
        return (
            _event("content_block_stop", {"type": "content_block_stop", "index": _index(plan)})
            + _event("message_delta", delta)
            + self.end_event
        )


ANTHROPIC = AnthropicWire()

__all__ = ["ANTHROPIC", "AnthropicWire"]
