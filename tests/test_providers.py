from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.wire_samples import (
    ANTHROPIC_MESSAGE,
    ANTHROPIC_TEXT_STREAM,
    ANTHROPIC_TOOL_STREAM,
    OPENAI_COMPLETION,
    OPENAI_TEXT_STREAM,
    OPENAI_TOOL_COMPLETION,
    OPENAI_TOOL_STREAM,
)
from trioproxy.core.sse import SSEParser
from trioproxy.core.types import (
    SSEEvent,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from trioproxy.core.usage import MalformedUsage
from trioproxy.dialects import DIALECTS
from trioproxy.errors import CallerError, ErrorKind, ProviderError
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.base import StreamDecoder
from trioproxy.providers.openai import OpenAIAdapter
from trioproxy.providers.registry import adapter_for

OPENAI, ANTHROPIC = OpenAIAdapter(), AnthropicAdapter()


def decode(decoder: StreamDecoder, raw: bytes) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for event in SSEParser().feed(raw):
        assert not decoder.done
        out.extend(decoder.feed(event))
    assert decoder.done
    return out


def openai_req(**body: Any) -> Any:
    return DIALECTS["openai"].parse_request(orjson.dumps({"model": "route", **body}))


def anthropic_req(**body: Any) -> Any:
    return DIALECTS["anthropic"].parse_request(
        orjson.dumps({"model": "route", "max_tokens": 100, **body})
    )


HI = [{"role": "user", "content": "hi"}]


# --- build_request -----------------------------------------------------------


def test_openai_passthrough_keeps_unknown_fields_and_forces_stream_usage() -> None:
    req = openai_req(messages=HI, stream=True, stream_options={"include_usage": False}, x_new=1)
    up = OPENAI.build_request(req, "gpt-4o-2024-08-06", "sk-1")
    assert up.path == "/v1/chat/completions"
    assert dict(up.headers) == {"authorization": "Bearer sk-1", "content-type": "application/json"}
    assert orjson.loads(up.body) == {
        "model": "gpt-4o-2024-08-06",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
        "x_new": 1,
    }
    assert req.body["model"] == "route"  # the caller's dict is not mutated


def test_openai_non_stream_gets_no_stream_options_and_no_key_no_auth() -> None:
    up = OPENAI.build_request(openai_req(messages=HI), "m", None)
    assert orjson.loads(up.body) == {"model": "m", "messages": HI}
    assert dict(up.headers) == {"content-type": "application/json"}


def _cap_fields(up: Any) -> dict[str, Any]:
    body = orjson.loads(up.body)
    return {k: body[k] for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")
            if k in body}  # fmt: skip


@pytest.mark.parametrize(
    ("asked", "sent"),
    [({}, {"max_completion_tokens": 500}), ({"max_tokens": 10**9}, {"max_tokens": 500}),
     ({"max_completion_tokens": 20}, {"max_completion_tokens": 20}),
     ({"max_tokens": 700, "max_completion_tokens": 30},
      {"max_tokens": 500, "max_completion_tokens": 30})],
)  # fmt: skip
def test_openai_upstream_carries_the_models_output_cap(
    asked: dict[str, Any], sent: dict[str, Any]
) -> None:
    """The field the caller named, capped; OpenAI's own when it named none."""
    openai = adapter_for("openai")
    assert _cap_fields(openai.build_request(openai_req(messages=HI, **asked), "m", None,
                                            max_output=500)) == sent  # fmt: skip
    if not asked:  # a server that copies OpenAI's API reads max_tokens
        up = adapter_for("openai_compatible").build_request(openai_req(messages=HI), "m", None,
                                                            max_output=500)  # fmt: skip
        assert _cap_fields(up) == {"max_tokens": 500}
    # without a cap (a caller outside the race), the body is the caller's
    assert _cap_fields(openai.build_request(openai_req(messages=HI, **asked), "m", None)) == asked


@pytest.mark.parametrize("asked", [100, 10**9])
def test_anthropic_and_responses_upstreams_carry_the_models_output_cap(asked: int) -> None:
    sent = min(asked, 500)
    native = anthropic_req(messages=HI, max_tokens=asked)
    assert _cap_fields(ANTHROPIC.build_request(native, "c", None, max_output=500)) == {
        "max_tokens": sent}  # fmt: skip
    translated = openai_req(messages=HI, max_tokens=asked)
    assert _cap_fields(ANTHROPIC.build_request(translated, "c", None, max_output=500)) == {
        "max_tokens": sent}  # fmt: skip
    no_cap = openai_req(messages=HI)  # the model's cap, not the old fixed 4,096
    assert _cap_fields(ANTHROPIC.build_request(no_cap, "c", None, max_output=500)) == {
        "max_tokens": 500}  # fmt: skip
    responses = DIALECTS["responses"].parse_request(
        orjson.dumps({"model": "r", "input": "hi", "max_output_tokens": asked}))  # fmt: skip
    up = adapter_for("openai", "responses").build_request(responses, "m", None, max_output=500)
    assert _cap_fields(up) == {"max_output_tokens": sent}


def test_anthropic_passthrough() -> None:
    req = anthropic_req(messages=HI, top_k=5, stream=True, thinking={"type": "disabled"})
    up = ANTHROPIC.build_request(req, "claude-x", "ak-1")
    assert up.path == "/v1/messages"
    assert dict(up.headers) == {
        "x-api-key": "ak-1",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    body = orjson.loads(up.body)
    assert body == {**req.body, "model": "claude-x"}
    assert body["top_k"] == 5 and body["thinking"] == {"type": "disabled"}


def test_openai_to_anthropic_translation() -> None:
    req = openai_req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": [{"type": "text", "text": "And?"}]},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": {"type": "object"},
                },
            }
        ],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=1.5,
        stop="END",
        user="u-42",
        seed=7,
        stream=True,
    )
    body = orjson.loads(ANTHROPIC.build_request(req, "claude-x", "k").body)
    assert body == {
        "model": "claude-x",
        "max_tokens": 4096,
        "system": "Be brief.\n\nUse metric.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "text", "text": "And?"},
                ],
            },
        ],
        "temperature": 1.0,
        "stop_sequences": ["END"],
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-42"},
        "stream": True,
    }


def test_openai_to_anthropic_images_and_max_tokens() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
    ]
    req = openai_req(messages=[{"role": "user", "content": parts}], max_completion_tokens=50)
    body = orjson.loads(ANTHROPIC.build_request(req, "c", None).body)
    assert body["max_tokens"] == 50
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_untranslatable_openai_requests_are_caller_errors(
    extra: dict[str, Any], param: str
) -> None:
    req = openai_req(**{"messages": HI, **extra})
    with pytest.raises(CallerError) as info:
        ANTHROPIC.build_request(req, "c", None)
    assert info.value.kind is ErrorKind.INVALID_REQUEST and info.value.param == param


# --- parse_response ----------------------------------------------------------


def test_openai_parse_response() -> None:
    c = OPENAI.parse_response(orjson.dumps(OPENAI_COMPLETION))
    assert (c.id, c.model, c.text, c.finish_reason) == (
        "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "gpt-4o-2024-08-06",
        "Hello there.",
        "stop",
    )
    assert c.usage == Usage(1117, 46) and c.wire == "openai" and c.native == OPENAI_COMPLETION


def test_openai_parse_tool_response() -> None:
    c = OPENAI.parse_response(orjson.dumps(OPENAI_TOOL_COMPLETION))
    assert c.text == "" and c.finish_reason == "tool_calls"
    assert c.tool_calls == (ToolCall("call_abc123", "get_weather", '{"location": "Boston, MA"}'),)


def test_openai_missing_usage_is_estimated() -> None:
    body = {k: v for k, v in OPENAI_COMPLETION.items() if k != "usage"}
    usage = OPENAI.parse_response(orjson.dumps(body)).usage
    assert usage.estimated and usage.output_tokens == 3


def test_anthropic_parse_response_keeps_cache_buckets() -> None:
    c = ANTHROPIC.parse_response(orjson.dumps(ANTHROPIC_MESSAGE))
    assert c.text == "I'll check." and c.finish_reason == "tool_calls"
    assert c.usage == Usage(10, 30, cache_read_tokens=20, cache_write_5m_tokens=5)
    assert c.usage.prompt_tokens == 35 and c.wire == "anthropic"
    assert c.tool_calls == (
        ToolCall("toolu_01A09q90", "get_weather", '{"location":"San Francisco, CA"}'),
    )


@pytest.mark.parametrize("input_tokens", ["absent", None])
def test_an_anthropic_usage_without_an_input_count_is_no_usage(input_tokens: object) -> None:
    """As in a stream (``message_delta``'s total): the gateway's estimate, and why, not 0
    input tokens, exact. Counts that are no counts are still a malformed answer."""
    usage: dict[str, object] = {"output_tokens": 30, "cache_read_input_tokens": 20}
    if input_tokens != "absent":
        usage["input_tokens"] = input_tokens
    c = ANTHROPIC.parse_response(orjson.dumps({**ANTHROPIC_MESSAGE, "usage": usage}))
    assert c.usage.estimated and c.usage.input_tokens == 0 and c.usage.cache_read_tokens == 0
    assert c.bad_usage is not None and "'input_tokens': None" in c.bad_usage
    assert ANTHROPIC.parse_response(orjson.dumps(ANTHROPIC_MESSAGE)).bad_usage is None
    with pytest.raises(MalformedUsage):
        ANTHROPIC.parse_response(
            orjson.dumps({**ANTHROPIC_MESSAGE, "usage": {**usage, "output_tokens": 1e30}})
        )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_anthropic_stop_reasons(stop: str, finish: str) -> None:
    body = {**ANTHROPIC_MESSAGE, "stop_reason": stop}
    assert ANTHROPIC.parse_response(orjson.dumps(body)).finish_reason == finish


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls", "content_filter"])
def test_openai_finish_reasons(finish: str) -> None:
    choice = {**OPENAI_COMPLETION["choices"][0], "finish_reason": finish}
    body = {**OPENAI_COMPLETION, "choices": [choice]}
    assert OPENAI.parse_response(orjson.dumps(body)).finish_reason == finish


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"choices": []}',
        b'{"choices": [{"message": 3}]}',
        b'{"choices":[{"message":{"content":null,"tool_calls":[{"id":"x"}]}}]}',
        b'{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":"1"}}',
    ],
)
def test_openai_garbage_is_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        OPENAI.parse_response(body)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'"x"',
        b"{}",
        b'{"content": [], "usage": {}}',
        b'{"content": [{"type": "text"}], "usage": {"output_tokens": 1}}',
    ],
)
def test_anthropic_garbage_is_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        ANTHROPIC.parse_response(body)


def test_error_messages() -> None:
    openai_err = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    anthropic_err = (
        b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    )
    assert OPENAI.error_message(429, openai_err) == "Rate limit reached"
    assert ANTHROPIC.error_message(529, anthropic_err) == "Overloaded"
    assert OPENAI.error_message(502, b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert ANTHROPIC.error_message(500, b"") == "HTTP 500"


# --- stream decoders ------------------------------------------------------------


def test_openai_text_stream() -> None:
    assert decode(OPENAI.new_stream_decoder(), OPENAI_TEXT_STREAM) == [
        StreamStart("chatcmpl-9x", "gpt-4o-mini-2024-07-18"),
        TextDelta("Hello"),
        TextDelta(" wörld!"),
        StreamEnd("stop"),
        UsageReport(Usage(19, 3)),
    ]


def test_openai_tool_stream() -> None:
    assert decode(OPENAI.new_stream_decoder(), OPENAI_TOOL_STREAM) == [
        StreamStart("chatcmpl-9x", "gpt-4o-mini-2024-07-18"),
        ToolCallDelta(0, "call_abc", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"loc'),
        ToolCallDelta(0, None, None, 'ation": "Paris"}'),
        ToolCallDelta(1, "call_def", "get_time", "{}"),
        StreamEnd("tool_calls"),
        UsageReport(Usage(82, 17)),
    ]


def test_openai_usage_on_a_choice_chunk_is_reported_at_done() -> None:
    d = OPENAI.new_stream_decoder()
    chunk = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
    }
    assert d.feed(SSEEvent(orjson.dumps(chunk).decode())) == [
        StreamStart("c", "m"),
        StreamEnd("length"),
    ]
    assert d.feed(SSEEvent("[DONE]")) == [UsageReport(Usage(5, 7))]
    assert d.done


def test_openai_error_chunk_raises() -> None:
    d = OPENAI.new_stream_decoder()
    with pytest.raises(ProviderError) as info:
        d.feed(
            SSEEvent('{"error": {"message": "The server had an error", "type": "server_error"}}')
        )
    assert info.value.kind is ErrorKind.STREAM_INTERRUPTED
    assert info.value.message == "The server had an error"


@pytest.mark.parametrize("data", ["", "nope", "[]", '{"choices": [3]}'])
def test_openai_garbage_chunk_is_value_error(data: str) -> None:
    with pytest.raises(ValueError):
        OPENAI.new_stream_decoder().feed(SSEEvent(data))


def test_anthropic_text_stream() -> None:
    assert decode(ANTHROPIC.new_stream_decoder(), ANTHROPIC_TEXT_STREAM) == [
        StreamStart("msg_01XFD", "claude-sonnet-4-5", Usage(25, 1, cache_read_tokens=100)),
        TextDelta("Hello"),
        TextDelta(" wörld!"),
        StreamEnd("stop"),
        UsageReport(Usage(25, 15, cache_read_tokens=100)),
    ]


def test_anthropic_tool_stream() -> None:
    assert decode(ANTHROPIC.new_stream_decoder(), ANTHROPIC_TOOL_STREAM) == [
        StreamStart("msg_014p7", "claude-sonnet-4-5", Usage(472, 2)),
        TextDelta("Let me check."),
        ToolCallDelta(0, "toolu_01T1x", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"location":'),
        ToolCallDelta(0, None, None, ' "Paris"}'),
        StreamEnd("tool_calls"),
        UsageReport(Usage(472, 89)),
    ]


def test_anthropic_message_delta_input_counts_override_start() -> None:
    d = ANTHROPIC.new_stream_decoder()
    start = '{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3,"output_tokens":1}}}'
    delta = '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":10,"cache_read_input_tokens":null,"output_tokens":4}}'
    d.feed(SSEEvent(start, "message_start"))
    assert d.feed(SSEEvent(delta, "message_delta")) == [
        StreamEnd("length"),
        UsageReport(Usage(10, 4)),
    ]


def test_anthropic_ping_and_unknown_events_yield_nothing() -> None:
    d = ANTHROPIC.new_stream_decoder()
    assert d.feed(SSEEvent('{"type": "ping"}', "ping")) == []
    assert d.feed(SSEEvent('{"type": "future_event", "x": 1}', "future_event")) == []
    assert not d.done


def test_anthropic_error_event_raises() -> None:
    d = ANTHROPIC.new_stream_decoder()
    with pytest.raises(ProviderError) as info:
        d.feed(
            SSEEvent(
                '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
                "error",
            )
        )
    assert info.value.kind is ErrorKind.STREAM_INTERRUPTED and info.value.message == "Overloaded"


@pytest.mark.parametrize(
    "data", ["x", '{"type": "message_start"}', '{"type": "content_block_delta", "delta": 1}']
)
def test_anthropic_garbage_event_is_value_error(data: str) -> None:
    with pytest.raises(ValueError):
        ANTHROPIC.new_stream_decoder().feed(SSEEvent(data))


@pytest.mark.parametrize(
    ("kind", "wire"),
    [("openai", "openai"), ("openai_compatible", "openai"), ("anthropic", "anthropic")],
)
def test_registry(kind: Any, wire: str) -> None:
    assert adapter_for(kind).wire == wire


# --- what a translation must not lose (a review with the official SDKs) --------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


def test_an_anthropic_callers_cap_goes_to_openai_in_its_own_field() -> None:
    """OpenAI's reasoning models refuse max_tokens; the translated request named it."""
    up = adapter_for("openai").build_request(anthropic_req(messages=HI), "m", None, max_output=50)
    assert _cap_fields(up) == {"max_completion_tokens": 50}
    up = adapter_for("openai_compatible").build_request(anthropic_req(messages=HI), "m", None,
                                                        max_output=50)  # fmt: skip
    assert _cap_fields(up) == {"max_tokens": 50}


def test_a_forced_tool_call_ends_as_a_tool_call() -> None:
    """OpenAI ends a named (forced) tool call with finish_reason "stop": an Anthropic caller
    got stop_reason end_turn with a tool_use block, and agent loops stopped."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": [call]}}]}  # fmt: skip
    assert OPENAI.parse_response(orjson.dumps(body)).finish_reason == "tool_calls"
    raw = (_chunk({"role": "assistant", "tool_calls": [{"index": 0, **call}]})
           + _chunk({}, "stop") + b"data: [DONE]\n\n")  # fmt: skip
    ends = [e for e in decode(OPENAI.new_stream_decoder(), raw) if isinstance(e, StreamEnd)]
    assert [e.finish_reason for e in ends] == ["tool_calls"]


def test_a_refusal_reaches_the_caller_as_a_refusal() -> None:
    """content null and refusal set: an Anthropic caller got end_turn and no content."""
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": None,
                                     "refusal": "I can't help with that."}}]}  # fmt: skip
    done = OPENAI.parse_response(orjson.dumps(body))
    assert (done.text, done.finish_reason) == ("I can't help with that.", "content_filter")
    rendered = orjson.loads(
        DIALECTS["anthropic"].render_completion(done, anthropic_req(messages=HI))
    )
    assert rendered["stop_reason"] == "refusal"
    assert rendered["content"] == [{"type": "text", "text": "I can't help with that."}]
    raw = (_chunk({"role": "assistant", "refusal": ""}) + _chunk({"refusal": "No."})
           + _chunk({}, "stop") + b"data: [DONE]\n\n")  # fmt: skip
    events = decode(OPENAI.new_stream_decoder(), raw)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["No."]
    assert [e.finish_reason for e in events if isinstance(e, StreamEnd)] == ["content_filter"]


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def test_a_streamed_anthropic_tool_call_without_arguments_has_the_empty_object() -> None:
    """Anthropic streams no input JSON (or only "") for a call without arguments: OpenAI and
    Responses callers got arguments "" (json.loads fails; the SDK's strict tools raise),
    while the same answer not streamed said {}."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
               "content": [], "stop_reason": None, "usage": {"input_tokens": 5,
                                                              "output_tokens": 1}}  # fmt: skip
    raw = b"".join([
        _event("message_start", {"type": "message_start", "message": message}),
        _event("content_block_start", {"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now",
                                 "input": {}}}),
        _event("content_block_delta", {"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": ""}}),
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event("content_block_start", {"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "toolu_2", "name": "at",
                                 "input": {}}}),
        _event("content_block_delta", {"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'}}),
        _event("content_block_stop", {"type": "content_block_stop", "index": 1}),
        _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
               "usage": {"output_tokens": 9}}),
        _event("message_stop", {"type": "message_stop"}),
    ])  # fmt: skip
    args: dict[int, str] = {}
    for e in decode(ANTHROPIC.new_stream_decoder(), raw):
        if isinstance(e, ToolCallDelta):
            args[e.index] = args.get(e.index, "") + e.arguments
    assert args == {0: "{}", 1: '{"x": 1}'}


def test_adaptive_thinking_goes_through_and_enabled_needs_its_budget() -> None:
    """The Anthropic SDK (2.17) sends thinking {"type": "adaptive"}: it was a 400."""
    up = ANTHROPIC.build_request(anthropic_req(messages=HI, thinking={"type": "adaptive"}), "c",
                                 None)  # fmt: skip
    assert orjson.loads(up.body)["thinking"] == {"type": "adaptive"}
    for bad in ({"type": "enabled"}, {"type": 3}, "on"):
        with pytest.raises(CallerError):
            anthropic_req(messages=HI, thinking=bad)


def test_whitespace_stop_sequences_are_not_sent_to_anthropic() -> None:
    """Anthropic refuses a stop sequence of whitespace alone; OpenAI callers send "\\n"."""
    up = ANTHROPIC.build_request(openai_req(messages=HI, stop=["\n", "END"]), "c", None)
    assert orjson.loads(up.body)["stop_sequences"] == ["END"]
    up = ANTHROPIC.build_request(openai_req(messages=HI, stop="\n"), "c", None)
    assert "stop_sequences" not in orjson.loads(up.body)


def test_an_anthropic_callers_output_schema_reaches_an_openai_target() -> None:
    """output_config.format was dropped on the way to OpenAI: the caller asked for
    structured output and got free text."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    req = anthropic_req(messages=HI,
                        output_config={"format": {"type": "json_schema", "schema": schema}})  # fmt: skip
    body = orjson.loads(OPENAI.build_request(req, "m", None).body)
    assert body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}  # fmt: skip
    native = orjson.loads(ANTHROPIC.build_request(req, "c", None).body)
    assert native["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "response_format" not in native


def test_a_failed_tool_result_says_so_to_an_openai_target() -> None:
    """tool_result.is_error was dropped: the model was not told its tool failed."""
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "timeout", "is_error": True}]},
    ]  # fmt: skip
    body = orjson.loads(OPENAI.build_request(anthropic_req(messages=msgs), "m", None).body)
    tool = next(m for m in body["messages"] if m["role"] == "tool")
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: timeout"}
