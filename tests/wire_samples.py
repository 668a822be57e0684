"""Hand-written transcripts of the real OpenAI and Anthropic wire formats, as
documented by each provider, plus helpers that read our output with the
official SDKs' own parsers and accumulators."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from trioproxy.core.sse import SSEParser

_HEAD = '"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1726000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_1","choices":'

OPENAI_TEXT_STREAM = (
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}],"usage":null}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"content":"Hello"}},"logprobs":null,"finish_reason":null}}],"usage":null}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"content":" wörld!"}},"logprobs":null,"finish_reason":null}}],"usage":null}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}\n\n'
    f'data: {{{_HEAD}[],"usage":{{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}\n\n'
    "data: [DONE]\n\n"
).encode()

_TOOL0 = '"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]'
OPENAI_TOOL_STREAM = (
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"role":"assistant","content":null,{_TOOL0}}},"logprobs":null,"finish_reason":null}}]}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{{\\"loc"}}}}]}},"logprobs":null,"finish_reason":null}}]}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"ation\\": \\"Paris\\"}}"}}}}]}},"logprobs":null,"finish_reason":null}}]}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{"tool_calls":[{{"index":1,"id":"call_def","type":"function","function":{{"name":"get_time","arguments":"{{}}"}}}}]}},"logprobs":null,"finish_reason":null}}]}}\n\n'
    f'data: {{{_HEAD}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"tool_calls"}}]}}\n\n'
    f'data: {{{_HEAD}[],"usage":{{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}}}\n\n'
    "data: [DONE]\n\n"
).encode()


def _ev(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


ANTHROPIC_TEXT_STREAM = (
    _ev(
        "message_start",
        '{"type":"message_start","message":{"id":"msg_01XFD","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":1}}}',
    )
    + _ev(
        "content_block_start",
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    )
    + _ev("ping", '{"type": "ping"}')
    + _ev(
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}',
    )
    + _ev(
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" wörld!"}}',
    )
    + _ev("content_block_stop", '{"type":"content_block_stop","index":0}')
    + _ev(
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}',
    )
    + _ev("message_stop", '{"type":"message_stop"}')
).encode()

ANTHROPIC_TOOL_STREAM = (
    _ev(
        "message_start",
        '{"type":"message_start","message":{"id":"msg_014p7","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}',
    )
    + _ev(
        "content_block_start",
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    )
    + _ev(
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}',
    )
    + _ev("content_block_stop", '{"type":"content_block_stop","index":0}')
    + _ev(
        "content_block_start",
        '{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x","name":"get_weather","input":{}}}',
    )
    + _ev(
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}',
    )
    + _ev(
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}',
    )
    + _ev(
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"Paris\\"}"}}',
    )
    + _ev("content_block_stop", '{"type":"content_block_stop","index":1}')
    + _ev(
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}',
    )
    + _ev("message_stop", '{"type":"message_stop"}')
).encode()

OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello there.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

OPENAI_TOOL_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "Boston, MA"}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
}

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "I'll check."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 20,
        "output_tokens": 30,
    },
}


def sse_data(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed JSON or the raw string) for every event in ``raw``."""
    out: list[tuple[str | None, Any]] = []
    for ev in SSEParser().feed(raw):
        out.append((ev.event, ev.data if ev.data == "[DONE]" else orjson.loads(ev.data)))
    return out


def openai_sdk_final(raw: bytes) -> ChatCompletion:
    """Accumulate our OpenAI SSE output with the OpenAI SDK's own stream state."""
    events = sse_data(raw)
    assert events[-1] == (None, "[DONE]")
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for _, data in events[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(data))
    # get_final_completion() refuses finish_reason "length"; the snapshot is the same data.
    return ChatCompletion.model_validate(state.current_completion_snapshot.model_dump())


_EVENT = TypeAdapter(RawMessageStreamEvent)


def anthropic_sdk_final(raw: bytes) -> Message:
    """Accumulate our Anthropic SSE output with the Anthropic SDK's own accumulator."""
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    for name, data in sse_data(raw):
        event = _EVENT.validate_python(data)
        assert name == event.type
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())
