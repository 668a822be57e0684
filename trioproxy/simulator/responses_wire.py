"""OpenAI Responses (``POST /v1/responses``), as the simulator writes it.

A whole answer is one ``response`` object; a stream is ``event: <type>`` +
``data: <json>`` events with a ``sequence_number``: ``response.created``,
``response.in_progress``, ``response.output_item.added`` (a message, or a
function call), per token one ``response.output_text.delta`` or
``response.function_call_arguments.delta``, the ``.done`` events, and
``response.completed`` (``response.incomplete`` when cut at
``max_output_tokens``) with the usage. ``store: true`` is accepted (OpenAI's
default) and ignored; ``instructions`` count as one more message.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from trioproxy.core.tokens import content_text, prompt_tokens
from trioproxy.simulator.openai_wire import OPENAI
from trioproxy.simulator.plan import (
    REASONING_MODEL,
    BadRequest,
    Intent,
    Plan,
    checked_max_tokens,
    checked_model,
    first_property,
    last_user_text,
    odd_counts,
    wants_tool,
)
from trioproxy.simulator.structured import requested_json


def _tool_name_and_key(tool: Any) -> tuple[str, str]:
    if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
        raise BadRequest("tools[0].name: missing required parameter")
    return tool["name"], first_property(tool.get("parameters"))


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequest("input: must be a non-empty string or array")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise BadRequest(f"input[{i}]: must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = content_text(content)
            out.append({"role": str(item.get("role")), "content": content})
        elif kind == "function_call_output":
            out.append({"role": "tool", "content": str(item.get("output", ""))})
        elif kind == "function_call":
            out.append({"role": "assistant", "content": str(item.get("arguments", ""))})
    return out


def _ids(plan: Plan) -> tuple[str, str]:
    """(message or function-call item id, call id)."""
    return ("fc_" if plan.tool_name else "msg_") + plan.id[-24:], "call_" + plan.tool_id


def _item(plan: Plan, status: str, text: str | None) -> dict[str, Any]:
    item_id, call_id = _ids(plan)
    if plan.tool_name is not None:
        return {"type": "function_call", "id": item_id, "call_id": call_id,
                "name": plan.tool_name, "arguments": text or "", "status": status}  # fmt: skip
    content = [] if text is None else [_part(text)]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _response(plan: Plan, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    done = status != "in_progress"
    out = plan.billed_output
    usage = {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": plan.cache.read},
        "output_tokens": out, "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.input_tokens + out,
    }  # fmt: skip
    usage = odd_counts(usage, plan.odd_usage)
    incomplete = plan.finish == "length"
    return {
        "id": plan.id, "object": "response", "created_at": plan.created,
        "status": status, "completed_at": plan.created if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete and done else None,
        "model": plan.model, "output": output, "parallel_tool_calls": True,
        "store": False, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
        "text": {"format": {"type": "text"}}, "truncation": "disabled",
        "usage": usage if done else None, "metadata": {},
        "previous_response_id": None, "instructions": None, "reasoning": None, "user": None,
        "max_output_tokens": None, "max_tool_calls": None, "background": False,
        "service_tier": "default", "safety_identifier": None, "prompt_cache_key": None,
        "top_logprobs": 0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    }  # fmt: skip


def _head_events(plan: Plan) -> int:
    """Events before the first delta: sequence numbers follow from the plan alone."""
    return (3 if plan.tool_name is not None else 4) + (2 if plan.reasoning_tokens else 0)


def _at(plan: Plan) -> int:
    """The answer item's ``output_index``: after the reasoning item, if any."""
    return 1 if plan.reasoning_tokens else 0


def _reasoning(plan: Plan) -> list[dict[str, Any]]:
    """A reasoning model's reasoning item (before the answer's): its summary, and its
    ``encrypted_content`` when the request's ``include`` asks for it (else null)."""
    if not plan.reasoning_tokens:
        return []
    encrypted = "enc_" + plan.id[-24:] if plan.encrypted_reasoning else None
    summary = [{"type": "summary_text", "text": "Thought it over."}]
    return [{"type": "reasoning", "id": "rs_" + plan.id[-24:], "summary": summary,
             "encrypted_content": encrypted}]  # fmt: skip


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": seq, **fields})
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)


class ResponsesWire:
    name = "responses"
    path = "/v1/responses"
    end_event = b""

    def parse(self, body: Any) -> Intent:
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object")
        model = checked_model(body)
        messages = _messages(body)
        max_tokens = checked_max_tokens(body.get("max_output_tokens"), "max_output_tokens")
        instructions = body.get("instructions")
        counted = (
            [{"role": "system", "content": instructions}, *messages] if instructions else messages
        )
        stream = body.get("stream") is True
        tool = None
        if body.get("tool_choice") != "none":
            tool = wants_tool(messages, body.get("tools"), _tool_name_and_key)
        include = body.get("include")
        encrypted = isinstance(include, list) and "reasoning.encrypted_content" in include
        return Intent(
            model, prompt_tokens(counted), last_user_text(messages), max_tokens, stream, stream,
            tool, reasoning=bool(REASONING_MODEL.match(model)), encrypted_reasoning=encrypted,
            json_schema=requested_json(body),
        )  # fmt: skip

    def error_body(self, status: int, message: str) -> bytes:
        return OPENAI.error_body(status, message)

    def completion(self, plan: Plan) -> bytes:
        status = "incomplete" if plan.finish == "length" else "completed"
        output = [*_reasoning(plan), _item(plan, "completed", plan.text)]
        return orjson.dumps(_response(plan, status, output))

    def stream_head(self, plan: Plan) -> bytes:
        seq = itertools.count()
        head = _event("response.created", next(seq), response=_response(plan, "in_progress", []))
        head += _event(
            "response.in_progress", next(seq), response=_response(plan, "in_progress", [])
        )
        for item in _reasoning(plan):  # done at once (no summary deltas)
            added = {**item, "summary": [], "encrypted_content": None}
            head += _event("response.output_item.added", next(seq), output_index=0, item=added)
            head += _event("response.output_item.done", next(seq), output_index=0, item=item)
        head += _event("response.output_item.added", next(seq), output_index=_at(plan),
                       item=_item(plan, "in_progress", None))  # fmt: skip
        if plan.tool_name is None:
            item_id, _ = _ids(plan)
            head += _event("response.content_part.added", next(seq), item_id=item_id,
                           output_index=_at(plan), content_index=0, part=_part(""))  # fmt: skip
        return head

    def chunk_encoder(self, plan: Plan) -> Callable[[str], bytes]:
        seq, (item_id, _) = itertools.count(_head_events(plan)), _ids(plan)
        if plan.tool_name is not None:
            prefix = (
                b'event: response.function_call_arguments.delta\ndata: {"type":"response.function_call_arguments.delta","item_id":"%s","output_index":%d,"sequence_number":'
                % (item_id.encode(), _at(plan))
            )
        else:
            prefix = (
                b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"%s","output_index":%d,"content_index":0,"logprobs":[],"sequence_number":'
                % (item_id.encode(), _at(plan))
            )
        dumps = orjson.dumps

        def encode(piece: str) -> bytes:
            return prefix + b"%d" % next(seq) + b',"delta":' + dumps(piece) + b"}\n\n"

        return encode

    def stream_prelude(self, plan: Plan) -> list[bytes]:
        return []

    def stream_tail(self, plan: Plan) -> bytes:
        seq, (item_id, _) = itertools.count(_head_events(plan) + len(plan.pieces)), _ids(plan)
        text = plan.text
        if plan.tool_name is not None:
            tail = _event("response.function_call_arguments.done", next(seq), item_id=item_id,
                          output_index=_at(plan), name=plan.tool_name, arguments=text)  # fmt: skip
        else:
            tail = _event("response.output_text.done", next(seq), item_id=item_id,
                          output_index=_at(plan), content_index=0, text=text, logprobs=[])  # fmt: skip
            tail += _event("response.content_part.done", next(seq), item_id=item_id,
                           output_index=_at(plan), content_index=0, part=_part(text))  # fmt: skip
        item = _item(plan, "completed", text)
        tail += _event("response.output_item.done", next(seq), output_index=_at(plan), item=item)
        status = "incomplete" if plan.finish == "length" else "completed"
        return tail + _event(
            f"response.{status}",
            next(seq),
            response=_response(plan, status, [*_reasoning(plan), item]),
        )


RESPONSES = ResponsesWire()

__all__ = ["RESPONSES", "ResponsesWire"]
