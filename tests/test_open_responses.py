"""The Open Responses acceptance cases (basic, streaming, system prompt, tool calling with
and without streaming, image input, multi-turn), rebuilt here as raw HTTP checks of the
response resource's required fields and of the typed stream, for a natively served target
(``gpt-4o-mini``) and a translated one (``claude-haiku``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fixtures_gateway import Running
from tests.rawhttp import post
from trioproxy.core.sse import SSEParser

REQUIRED = (
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice",
    "truncation", "parallel_tool_calls", "text", "top_p", "presence_penalty",
    "frequency_penalty", "top_logprobs", "temperature", "reasoning", "user", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "metadata",
    "safety_identifier", "prompt_cache_key",
)  # fmt: skip
"""Every field the Open Responses ``ResponseResource`` schema requires."""
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Weather of a location.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]},
}  # fmt: skip
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


CASES: dict[str, tuple[dict[str, Any], bool, str | None]] = {
    "basic-response": ({"input": [msg("user", "Say hello in three words.")]}, False, None),
    "streaming-response": ({"input": [msg("user", "Count from 1 to 5.")]}, True, None),
    "system-prompt": (
        {"input": [msg("system", "You are terse."), msg("user", "Say hello.")]}, False, None,
    ),
    "tool-calling": (
        {"input": [msg("user", "What's the weather like in Oslo?")], "tools": [WEATHER_TOOL]},
        False, "function_call",
    ),
    "tool-calling-streaming": (
        {"input": [msg("user", "What's the weather like in Oslo?")], "tools": [WEATHER_TOOL]},
        True, "function_call",
    ),
    "image-input": (
        {"input": [msg("user", [{"type": "input_text", "text": "What is in this image?"},
                                {"type": "input_image", "image_url": PIXEL}])]},
        False, None,
    ),
    "multi-turn": (
        {"input": [msg("user", "My name is Alice."), msg("assistant", "Hello Alice!"),
                   msg("user", "What is my name?")]},
        False, None,
    ),
}  # fmt: skip


def check_resource(resource: dict[str, Any], expect_item: str | None) -> None:
    missing = [k for k in REQUIRED if k not in resource]
    assert not missing, missing
    assert resource["object"] == "response" and resource["status"] == "completed"
    assert resource["output"], "no output items"
    types = [item["type"] for item in resource["output"]]
    assert (expect_item or "message") in types
    usage = resource["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] >= 0
    assert usage["output_tokens_details"]["reasoning_tokens"] >= 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_open_responses_acceptance_case(gateway: Running, model: str, case: str) -> None:
    body, stream, expect_item = CASES[case]
    r = await post(gateway.url, "/v1/responses", {"model": model, "stream": stream, **body},
                   {"authorization": f"Bearer {gateway.key}"})  # fmt: skip
    assert r.status == 200, r.body
    if not stream:
        check_resource(orjson.loads(r.body), expect_item)
        return
    events = [orjson.loads(e.data) for e in SSEParser().feed(r.body)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    for e in events:
        if e["type"] in ("response.created", "response.in_progress", "response.completed"):
            assert not [k for k in REQUIRED if k not in e["response"]]
    check_resource(events[-1]["response"], expect_item)
    if expect_item == "function_call":
        added = [e for e in events if e["type"] == "response.output_item.added"]
        done = [e for e in events if e["type"] == "response.output_item.done"]
        assert any(e["item"]["type"] == "function_call" for e in added)
        assert any(e["item"]["type"] == "function_call" for e in done)
        assert {"response.function_call_arguments.delta",
                "response.function_call_arguments.done"} <= set(kinds)  # fmt: skip
    else:
        assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
