"""The reservation's prompt bound covers everything billed as input (issue 10 item 7)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trioproxy.core.input_bound import TOOLS_OVERHEAD, input_bound
from trioproxy.core.tokens import prompt_tokens
from trioproxy.dialects import DIALECTS
from trioproxy.dialects.anthropic import dropped_from_chat

HI = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {f"p{i}": {"type": "string",
          "description": "x" * 50} for i in range(40)}}  # fmt: skip
PNG = "data:image/png;base64," + "A" * 50_000


def bound(chat: dict[str, Any], image_tokens: int = 1600) -> int:
    return input_bound(chat, image_tokens=image_tokens)


def test_plain_text_bound_is_unchanged() -> None:
    assert bound({"messages": HI}) == prompt_tokens(HI, bound=True) == 6


def test_tools_count_their_json_and_the_tool_overhead() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]
    got = bound({"messages": HI, "tools": tools})
    assert got >= 6 + TOOLS_OVERHEAD + len(orjson.dumps(tools))
    assert len(orjson.dumps(tools)) > 3000  # the old bound ignored all of it


def test_images_count_the_allowance_not_their_bytes() -> None:
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]}]  # fmt: skip
    assert bound({"messages": msgs}, image_tokens=1000) == prompt_tokens(msgs, bound=True) + 2000
    assert bound({"messages": msgs}, image_tokens=5000) == prompt_tokens(msgs, bound=True) + 10000


def test_files_and_audio_count_bytes_plus_the_allowance() -> None:
    part = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + "B" * 9000}}
    got = bound({"messages": [{"role": "user", "content": [part]}]}, image_tokens=100)
    assert got >= 4 + 9000 + 100


def test_names_tool_results_system_and_response_format_count() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "s" * 300},
            {"role": "user", "content": "q", "name": "n" * 40},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "r" * 500}]},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    }  # fmt: skip
    assert bound(chat) >= 300 + 40 + 500 + len(orjson.dumps(chat["response_format"]))


def test_anthropic_tool_result_images_and_thinking_are_counted() -> None:
    body = {
        "model": "m", "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t" * 700, "signature": "sig"},
                {"type": "tool_use", "id": "tu", "name": "f", "input": {"a": "v" * 200}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu", "content": [
                {"type": "text", "text": "seen"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "A" * 40_000}}]}]},
        ],
    }  # fmt: skip
    req = DIALECTS["anthropic"].parse_request(orjson.dumps(body))
    got = input_bound(req.chat, image_tokens=1600, extra=dropped_from_chat(req.body))
    assert got >= 700 + 200 + 1600
    assert got < 40_000  # the image is the allowance, not its base64 bytes


@pytest.mark.parametrize("image_tokens", [0, 1, 1600])
def test_bound_never_below_the_messages_only_bound(image_tokens: int) -> None:
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}]
    assert bound({"messages": msgs}, image_tokens) >= prompt_tokens(msgs, bound=True)
