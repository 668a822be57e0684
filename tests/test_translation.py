"""Round trips OpenAI <-> Anthropic for requests, responses and streams."""

from __future__ import annotations

from dataclasses import replace
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
    anthropic_sdk_final,
    openai_sdk_final,
    sse_data,
)
from trioproxy.core.sse import SSEParser
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    Dialect,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from trioproxy.dialects import DIALECTS
from trioproxy.dialects.base import dialect_id
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.base import ProviderAdapter
from trioproxy.providers.openai import OpenAIAdapter

ADAPTERS: dict[Dialect, ProviderAdapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
}
OTHER: dict[Dialect, Dialect] = {"openai": "anthropic", "anthropic": "openai"}
ID_PREFIX: dict[Dialect, str] = {"openai": "chatcmpl-", "anthropic": "msg_"}


def upstream_body(req: ChatRequest, wire: Dialect, model: str) -> dict[str, Any]:
    return orjson.loads(ADAPTERS[wire].build_request(req, model, "key").body)


def parse(dialect: Dialect, body: dict[str, Any]) -> ChatRequest:
    return DIALECTS[dialect].parse_request(orjson.dumps(body))


ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 512,
    "system": "You are a weather bot.",
    "messages": [
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
                {"type": "text", "text": "Thanks!"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ],
    "tool_choice": {"type": "tool", "name": "get_weather"},
    "stop_sequences": ["STOP"],
    "temperature": 0.2,
    "metadata": {"user_id": "end-1"},
    "stream": True,
}


def test_anthropic_request_through_openai_and_back() -> None:
    req = parse("anthropic", ANTHROPIC_REQUEST)
    openai_body = upstream_body(req, "openai", "gpt-x")
    assert openai_body["messages"][0] == {"role": "system", "content": "You are a weather bot."}
    assert openai_body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert openai_body["messages"][3:5] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
    ]
    assert openai_body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert openai_body["stream_options"] == {"include_usage": True}
    assert (openai_body["stop"], openai_body["user"], openai_body["max_tokens"]) == (
        ["STOP"],
        "end-1",
        512,
    )

    back = upstream_body(parse("openai", openai_body), "anthropic", "claude-x")
    expected = {**ANTHROPIC_REQUEST}
    expected["messages"] = [*ANTHROPIC_REQUEST["messages"]]
    expected["messages"][2] = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
            {"type": "text", "text": "Thanks!"},
        ],
    }
    assert back == expected


OPENAI_REQUEST: dict[str, Any] = {
    "model": "gpt-x",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "-3C"},
        {"role": "assistant", "content": "It is -3C."},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object"},
            },
        }
    ],
    "tool_choice": "auto",
    "max_tokens": 64,
    "temperature": 0.7,
    "top_p": 0.9,
    "stop": ["END"],
    "user": "end-2",
}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_request_through_anthropic_and_back(stream: bool) -> None:
    body = {**OPENAI_REQUEST, "stream": stream}
    anthropic_body = upstream_body(parse("openai", body), "anthropic", "claude-x")
    assert anthropic_body["system"] == "Be terse."
    assert anthropic_body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "-3C"}],
    }
    assert anthropic_body["tool_choice"] == {"type": "auto"}
    assert anthropic_body.get("stream", False) is stream

    back = upstream_body(parse("anthropic", anthropic_body), "openai", "gpt-x")
    expected = {**body, "stream_options": {"include_usage": True}} if stream else {**OPENAI_REQUEST}
    assert back == expected


def fields(c: Completion) -> tuple[Any, ...]:
    return (c.id, c.model, c.text, c.finish_reason, c.usage, c.tool_calls)


@pytest.mark.parametrize(
    ("wire", "native"),
    [
        ("openai", OPENAI_COMPLETION),
        ("openai", OPENAI_TOOL_COMPLETION),
        ("anthropic", ANTHROPIC_MESSAGE),
    ],
)
def test_response_round_trip(wire: Dialect, native: dict[str, Any]) -> None:
    original = ADAPTERS[wire].parse_response(orjson.dumps(native))
    other = OTHER[wire]
    req = parse(
        other, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    rendered = DIALECTS[other].render_completion(original, req)
    translated = ADAPTERS[other].parse_response(rendered)
    assert translated.id == dialect_id(ID_PREFIX[other], original.id) != original.id
    # Tool arguments are re-serialised (key order kept), so compare them as JSON.
    assert fields(replace(translated, tool_calls=(), id="")) == fields(
        replace(original, tool_calls=(), id="")
    )
    assert [(t.id, t.name, orjson.loads(t.arguments)) for t in translated.tool_calls] == [
        (t.id, t.name, orjson.loads(t.arguments)) for t in original.tool_calls
    ]
    again = DIALECTS[wire].render_completion(translated, parse(wire, {**req.body, "max_tokens": 5}))
    assert fields(ADAPTERS[wire].parse_response(again))[:5] == fields(original)[:5]


# --- streams ---------------------------------------------------------------------------


def decode(wire: Dialect, raw: bytes) -> list[StreamEvent]:
    decoder = ADAPTERS[wire].new_stream_decoder()
    out: list[StreamEvent] = []
    for event in SSEParser().feed(raw):
        out.extend(decoder.feed(event))
    assert decoder.done
    return out


def relay(events: list[StreamEvent], dialect: Dialect) -> bytes:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    if dialect == "openai":
        body["stream_options"] = {"include_usage": True}
    enc = DIALECTS[dialect].new_stream_encoder(parse(dialect, body))
    return b"".join(enc.encode(e) for e in events) + enc.finish()


def summary(events: list[StreamEvent]) -> tuple[Any, ...]:
    text, finish, usage = "", None, None
    tools: dict[int, tuple[str | None, str | None, str]] = {}
    for e in events:
        if isinstance(e, TextDelta):
            text += e.text
        elif isinstance(e, ToolCallDelta):
            tid, name, args = tools.get(e.index, (None, None, ""))
            tools[e.index] = (tid or e.id, name or e.name, args + e.arguments)
        elif isinstance(e, StreamEnd):
            finish = e.finish_reason
        elif isinstance(e, UsageReport):
            usage = e.usage
    start = events[0]
    assert isinstance(start, StreamStart)
    return start.id, start.model, text, tools, finish, usage


STREAMS = [
    ("openai", OPENAI_TEXT_STREAM),
    ("openai", OPENAI_TOOL_STREAM),
    ("anthropic", ANTHROPIC_TEXT_STREAM),
    ("anthropic", ANTHROPIC_TOOL_STREAM),
]


@pytest.mark.parametrize(("wire", "raw"), STREAMS)
def test_stream_same_dialect_relay_is_lossless(wire: Dialect, raw: bytes) -> None:
    events = decode(wire, raw)
    assert decode(wire, relay(events, wire)) == events


@pytest.mark.parametrize(("wire", "raw"), STREAMS)
def test_stream_cross_dialect_round_trip(wire: Dialect, raw: bytes) -> None:
    events = decode(wire, raw)
    other = OTHER[wire]
    translated = relay(events, other)
    seen = summary(decode(other, translated))
    assert seen[0] == dialect_id(ID_PREFIX[other], summary(events)[0]) != summary(events)[0]
    assert seen[1:] == summary(events)[1:]
    back = decode(wire, relay(decode(other, translated), wire))
    assert summary(back) == summary(events)  # the id too: a round trip gives it back


def test_openai_stream_seen_by_anthropic_sdk() -> None:
    final = anthropic_sdk_final(relay(decode("openai", OPENAI_TOOL_STREAM), "anthropic"))
    assert final.stop_reason == "tool_use"
    assert [(b.id, b.name, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("call_abc", "get_weather", {"location": "Paris"}),
        ("call_def", "get_time", {}),
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (82, 17)


def test_anthropic_stream_seen_by_openai_sdk() -> None:
    final = openai_sdk_final(relay(decode("anthropic", ANTHROPIC_TOOL_STREAM), "openai"))
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.id, call.function.name, orjson.loads(call.function.arguments)) == (
        "toolu_01T1x",
        "get_weather",
        {"location": "Paris"},
    )
    assert final.usage is not None and (
        final.usage.prompt_tokens,
        final.usage.completion_tokens,
    ) == (472, 89)


INTERLEAVED = [
    StreamStart("chatcmpl-1", "gpt-4o"),
    ToolCallDelta(0, "call_A", "get_weather", ""),
    ToolCallDelta(1, "call_B", "get_time", ""),
    ToolCallDelta(0, None, None, '{"city": '),
    ToolCallDelta(1, None, None, '{"tz": '),
    ToolCallDelta(0, None, None, '"Paris"}'),
    ToolCallDelta(1, None, None, '"UTC"}'),
    StreamEnd("tool_calls"),
    UsageReport(Usage(10, 5)),
]
"""Two parallel tool calls whose argument deltas an upstream interleaves (0, 1, 0, 1)."""


def test_interleaved_parallel_tool_calls_reach_an_anthropic_caller_whole() -> None:
    """Two blocks with their whole inputs, one after the other (Anthropic's blocks never
    interleave); each switch of index opened a new, broken block (six in all)."""
    raw = relay(INTERLEAVED, "anthropic")
    final = anthropic_sdk_final(raw)
    assert [(b.id, b.name, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("call_A", "get_weather", {"city": "Paris"}),
        ("call_B", "get_time", {"tz": "UTC"}),
    ]
    kinds = [d["type"] for _, d in sse_data(raw)]
    blocks = [k for k in kinds if k.startswith("content_block_s")]
    assert blocks == ["content_block_start", "content_block_stop"] * 2


def test_interleaved_parallel_tool_calls_reach_a_responses_caller_whole() -> None:
    """Two function_call items, each delta on its own item; the calls stay open together."""
    body = {"model": "m", "input": "x", "stream": True}
    enc = DIALECTS["responses"].new_stream_encoder(parse("responses", body))
    raw = b"".join(enc.encode(e) for e in INTERLEAVED) + enc.finish()
    events = [d for _, d in sse_data(raw)]
    (done,) = [e for e in events if e["type"] == "response.completed"]
    calls = [(i["call_id"], i["name"], orjson.loads(i["arguments"]))
             for i in done["response"]["output"]]  # fmt: skip
    assert calls == [
        ("call_A", "get_weather", {"city": "Paris"}),
        ("call_B", "get_time", {"tz": "UTC"}),
    ]
    added = {e["item"]["id"]: e["output_index"] for e in events
             if e["type"] == "response.output_item.added"}  # fmt: skip
    assert sorted(added.values()) == [0, 1]
    args: dict[str, str] = {}
    for e in events:
        if e["type"] == "response.function_call_arguments.delta":
            assert added[e["item_id"]] == e["output_index"]
            args[e["item_id"]] = args.get(e["item_id"], "") + e["delta"]
    assert sorted(args.values()) == ['{"city": "Paris"}', '{"tz": "UTC"}']
