"""The Responses dialect and the native Responses adapter: bytes in, values out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trioproxy.core.sse import SSEParser
from trioproxy.core.types import (
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from trioproxy.dialects.responses import parse_request
from trioproxy.dialects.responses_render import ResponsesStreamEncoder
from trioproxy.errors import CallerError, ErrorKind, PolicyError, ProviderError
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.openai_responses import OpenAIResponsesAdapter
from trioproxy.simulator.plan import Intent, make_plan
from trioproxy.simulator.responses_wire import RESPONSES


def parse(body: dict[str, Any]) -> Any:
    return parse_request(orjson.dumps({"model": "m", **body}))


def test_items_become_the_canonical_chat_form() -> None:
    req = parse(
        {
            "instructions": "Be brief.",
            "input": [
                {"type": "message", "role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "Weather here?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA",
                     "detail": "low"},
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"a":1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2",
                 "output": [{"type": "input_text", "text": "rain"}]},
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "max_output_tokens": 99,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {}}},
            "user": "end-7",
        }
    )  # fmt: skip
    assert req.dialect == "responses" and req.max_tokens == 99 and req.end_user == "end-7"
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"a":1}'}},
    ]
    assert req.chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url",
             "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]  # fmt: skip
    assert req.chat["tools"] == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert req.chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert req.chat["max_tokens"] == 99 and req.chat["user"] == "end-7"
    assert req.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {}},
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "x", "store": True}, "store"),
        ({"input": "x", "background": True}, "background"),
        ({"input": ""}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "input[0]"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        # a choice the tools cannot meet (the providers refuse it; a cached answer would not)
        (
            {
                "input": "x",
                "tool_choice": {"type": "function", "name": "nope"},
                "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
            },
            "tool_choice.name",
        ),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"input": [{"role": "assistant", "content": "only me"}]}, "input"),
        # Chat Completions fields: OpenAI's "Unknown parameter", not dropped on the way
        ({"input": "x", "max_tokens": 10}, "max_tokens"),
        ({"input": "x", "max_tokens": "10"}, "max_tokens"),
        ({"input": "x", "messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"input": "x", "n": 2}, "n"),
    ],
)
def test_bad_or_stateful_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(CallerError) as err:
        parse(body)
    assert err.value.param == param and err.value.status == 400


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in SSEParser().feed(raw)]


def test_stream_encoder_orders_items_and_numbers_events() -> None:
    enc = ResponsesStreamEncoder(parse({"input": "hi", "stream": True}))
    raw = (
        b"".join(
            enc.encode(e)
            for e in (
                StreamStart("x", "m-1"),
                TextDelta("Let me check."),
                ToolCallDelta(0, "call_1", "w", ""),
                ToolCallDelta(0, None, None, '{"a":'),
                ToolCallDelta(0, None, None, "1}"),
                StreamEnd("tool_calls"),
                UsageReport(Usage(7, 9)),
            )
        )
        + enc.finish()
    )
    events = _events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == '{"a":1}' and final["model"] == "m-1"
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 0}
    assert final["usage"]["total_tokens"] == 16


@pytest.mark.parametrize(
    ("err", "terminal", "status"),
    [
        (ProviderError(ErrorKind.STREAM_INTERRUPTED, "broke"), "response.failed", "failed"),
        (PolicyError(ErrorKind.BUDGET_EXCEEDED, "spent"), "response.incomplete", "incomplete"),
    ],
)
def test_a_broken_stream_never_completes(err: Any, terminal: str, status: str) -> None:
    enc = ResponsesStreamEncoder(parse({"input": "four words of prompt", "stream": True}))
    raw = enc.encode(StreamStart("x", "m")) + enc.encode(TextDelta("two words")) + enc.error(err)
    events = _events(raw)
    assert events[-1]["type"] == terminal
    assert "response.completed" not in [e["type"] for e in events]
    response = events[-1]["response"]
    assert response["status"] == status and response["error"]["message"] == err.message
    assert response["output"][0]["status"] == "incomplete"
    assert response["usage"]["output_tokens"] == 2 and response["usage"]["input_tokens"] > 0


def _plan(tool: bool, max_tokens: int | None = None) -> Any:
    intent = Intent("m", 5, "seed", max_tokens, True, True, ("w", "city") if tool else None)
    return make_plan(intent, 6, "resp_", 1)


@pytest.mark.parametrize("tool", [False, True])
def test_native_adapter_decodes_the_simulator_stream_and_body(tool: bool) -> None:
    plan = _plan(tool)
    encode = RESPONSES.chunk_encoder(plan)
    raw = RESPONSES.stream_head(plan) + b"".join(map(encode, plan.pieces))
    raw += RESPONSES.stream_tail(plan)
    assert [e["sequence_number"] for e in _events(raw)] == list(range(len(_events(raw))))
    adapter = OpenAIResponsesAdapter()
    decoder = adapter.new_stream_decoder()
    out = [ev for sse in SSEParser().feed(raw) for ev in decoder.feed(sse)]
    assert decoder.done and isinstance(out[0], StreamStart)
    assert out[-2:] == [
        StreamEnd("tool_calls" if tool else "stop"),
        UsageReport(Usage(5, plan.output_tokens)),
    ]
    pieces = [e.arguments if isinstance(e, ToolCallDelta) else e.text for e in out[1:-2]]  # type: ignore[union-attr]
    assert "".join(pieces) == plan.text
    whole = adapter.parse_response(RESPONSES.completion(plan))
    assert whole.usage == Usage(5, plan.output_tokens) and whole.wire == "responses"
    assert (whole.tool_calls[0].arguments if tool else whole.text) == plan.text


def test_native_adapter_maps_incomplete_and_failed() -> None:
    adapter = OpenAIResponsesAdapter()
    cut = adapter.parse_response(RESPONSES.completion(_plan(False, max_tokens=2)))
    assert cut.finish_reason == "length"
    failed = b'event: response.failed\ndata: {"type":"response.failed","response":{"error":{"code":"x","message":"boom"}}}\n\n'
    with pytest.raises(ProviderError, match="boom"):
        for sse in SSEParser().feed(failed):
            adapter.new_stream_decoder().feed(sse)


def test_native_request_is_stateless() -> None:
    req = parse({"input": "hi", "stream": True, "store": False})
    body = orjson.loads(OpenAIResponsesAdapter().build_request(req, "dep", "k").body)
    assert (body["model"], body["store"], body["stream"]) == ("dep", False, True)


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ({"type": "json_object"}, "single valid JSON object"),
        (
            {"type": "json_schema", "name": "city", "schema": {"type": "object"}},
            'JSON Schema (city): {"type":"object"}',
        ),
    ],
)
def test_text_format_reaches_anthropic_targets_as_a_system_instruction(
    fmt: dict[str, Any], needle: str
) -> None:
    req = parse({"instructions": "Be brief.", "input": "Where?", "text": {"format": fmt}})
    body = orjson.loads(AnthropicAdapter().build_request(req, "claude", "k").body)
    assert body["system"].startswith("Be brief.\n\n") and needle in body["system"]
    plain = parse({"input": "Where?", "text": {"format": {"type": "text"}}})
    assert "system" not in orjson.loads(AnthropicAdapter().build_request(plain, "c", "k").body)


def test_a_streamed_refusal_reaches_the_caller() -> None:
    """A Responses upstream that declines streams response.refusal.delta events: they were
    dropped, and the caller got an empty, "completed" response. Now its words, as text, and
    a content_filter finish (as the chat decoder does with a chat refusal)."""
    events = [
        {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-4o"}},
        {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": "I can't help "},
        {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": "with that."},
        {"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
         "output": [], "usage": {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}}},
    ]  # fmt: skip
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    decoder = OpenAIResponsesAdapter().new_stream_decoder()
    out = [ev for sse in SSEParser().feed(raw) for ev in decoder.feed(sse)]
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "I can't help with that."
    assert StreamEnd("content_filter") in out
