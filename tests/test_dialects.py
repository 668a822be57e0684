from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from tests.wire_samples import anthropic_sdk_final, openai_sdk_final, sse_data
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    Dialect,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from trioproxy.dialects import DIALECTS, render_error
from trioproxy.errors import CallerError, ErrorKind, GatewayError, PolicyError, ProviderError

HI = [{"role": "user", "content": "hi"}]


def parse(dialect: Dialect, body: dict[str, Any]) -> ChatRequest:
    return DIALECTS[dialect].parse_request(orjson.dumps(body))


# --- parse_request -------------------------------------------------------------


def test_openai_request_fields() -> None:
    body = {
        "model": "fast",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 99,
        "user": "end-7",
        "response_format": {"type": "json_object"},
    }
    req = parse("openai", body)
    assert (req.dialect, req.model, req.stream, req.include_usage) == ("openai", "fast", True, True)
    assert (req.max_tokens, req.end_user) == (99, "end-7")
    assert req.body == body and req.chat == body


def test_openai_include_usage_defaults_off() -> None:
    req = parse("openai", {"model": "m", "messages": HI, "stream": True, "max_tokens": 5})
    assert not req.include_usage and req.max_tokens == 5 and req.end_user is None


def test_anthropic_request_fields_and_chat_form() -> None:
    body = {
        "model": "smart",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ],
        "metadata": {"user_id": "end-9"},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_k": 10,
        "stream": True,
    }
    req = parse("anthropic", body)
    assert (req.model, req.stream, req.include_usage, req.max_tokens, req.end_user) == (
        "smart",
        True,
        True,
        300,
        "end-9",
    )
    assert req.body == body
    assert req.chat == {
        "model": "smart",
        "max_tokens": 300,
        "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ],
        "temperature": 0.5,
        "stop": ["\n\nHuman:"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "end-9",
    }


def test_anthropic_non_stream_still_includes_usage() -> None:
    req = parse("anthropic", {"model": "m", "max_tokens": 1, "messages": HI})
    assert req.include_usage and not req.stream and "stream" not in req.chat


BAD_OPENAI: list[tuple[bytes | dict[str, Any], ErrorKind, str | None]] = [
    (b"{not json", ErrorKind.INVALID_JSON, None),
    (b"", ErrorKind.INVALID_JSON, None),
    (b"[1]", ErrorKind.INVALID_REQUEST, None),
    ({"messages": HI}, ErrorKind.INVALID_REQUEST, "model"),
    ({"model": 3, "messages": HI}, ErrorKind.INVALID_REQUEST, "model"),
    ({"model": "m"}, ErrorKind.INVALID_REQUEST, "messages"),
    # as OpenAI answers it: stream options on an answer that is not streamed
    (
        {"model": "m", "messages": HI, "stream_options": {"include_usage": True}},
        ErrorKind.INVALID_REQUEST,
        "stream_options",
    ),
    (
        {"model": "m", "messages": HI, "stream": False, "stream_options": {}},
        ErrorKind.INVALID_REQUEST,
        "stream_options",
    ),
    ({"model": "m", "messages": []}, ErrorKind.INVALID_REQUEST, "messages"),
    ({"model": "m", "messages": "hi"}, ErrorKind.INVALID_REQUEST, "messages"),
    ({"model": "m", "messages": ["hi"]}, ErrorKind.INVALID_REQUEST, "messages[0]"),
    # content null only in an assistant message that calls tools (OpenAI refuses it too)
    (
        {"model": "m", "messages": [{"role": "user", "content": None}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].content",
    ),
    (
        {"model": "m", "messages": [{"role": "user"}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].content",
    ),
    (
        {"model": "m", "messages": [*HI, {"role": "assistant", "content": None}]},
        ErrorKind.INVALID_REQUEST,
        "messages[1].content",
    ),
    # a tool call required with no tool offered
    (
        {"model": "m", "messages": HI, "tool_choice": "required"},
        ErrorKind.INVALID_REQUEST,
        "tool_choice",
    ),
    # a named function the request does not offer
    (
        {
            "model": "m",
            "messages": HI,
            "tool_choice": {"type": "function", "function": {"name": "x"}},
            "tools": [{"type": "function", "function": {"name": "y"}}],
        },
        ErrorKind.INVALID_REQUEST,
        "tool_choice.function.name",
    ),
    (
        {"model": "m", "messages": [{"role": "bot", "content": "x"}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].role",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].content",
    ),
    (
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].tool_call_id",
    ),
    ({"model": "m", "messages": HI, "stream": "yes"}, ErrorKind.INVALID_REQUEST, "stream"),
    (
        {"model": "m", "messages": HI, "stream_options": []},
        ErrorKind.INVALID_REQUEST,
        "stream_options",
    ),
    (
        {"model": "m", "messages": HI, "stream_options": {"include_usage": 1}},
        ErrorKind.INVALID_REQUEST,
        "stream_options.include_usage",
    ),
    ({"model": "m", "messages": HI, "max_tokens": 0}, ErrorKind.INVALID_REQUEST, "max_tokens"),
    ({"model": "m", "messages": HI, "max_tokens": 1.5}, ErrorKind.INVALID_REQUEST, "max_tokens"),
    ({"model": "m", "messages": HI, "max_tokens": True}, ErrorKind.INVALID_REQUEST, "max_tokens"),
    (
        {"model": "m", "messages": HI, "max_completion_tokens": -1},
        ErrorKind.INVALID_REQUEST,
        "max_completion_tokens",
    ),
    (
        {"model": "m", "messages": HI, "max_completion_tokens": 9, "max_tokens": "9"},
        ErrorKind.INVALID_REQUEST,
        "max_tokens",
    ),
    ({"model": "m", "messages": HI, "temperature": 2.5}, ErrorKind.INVALID_REQUEST, "temperature"),
    (
        {"model": "m", "messages": HI, "temperature": "hot"},
        ErrorKind.INVALID_REQUEST,
        "temperature",
    ),
    ({"model": "m", "messages": HI, "top_p": 1.1}, ErrorKind.INVALID_REQUEST, "top_p"),
    ({"model": "m", "messages": HI, "n": 0}, ErrorKind.INVALID_REQUEST, "n"),
    ({"model": "m", "messages": HI, "user": 5}, ErrorKind.INVALID_REQUEST, "user"),
    # fields passed on without being read: a newcomer's metadata [1], reasoning_effort 5 and
    # service_tier 5 went to the provider
    ({"model": "m", "messages": HI, "metadata": [1]}, ErrorKind.INVALID_REQUEST, "metadata"),
    ({"model": "m", "messages": HI, "metadata": {"a": 1}}, ErrorKind.INVALID_REQUEST, "metadata.a"),
    (
        {"model": "m", "messages": HI, "metadata": {str(i): "v" for i in range(17)}},
        ErrorKind.INVALID_REQUEST,
        "metadata",
    ),
    (
        {"model": "m", "messages": HI, "reasoning_effort": 5},
        ErrorKind.INVALID_REQUEST,
        "reasoning_effort",
    ),
    # OpenAI answers 400 to an effort it does not know, and to a json_schema format whose
    # schema is no object; both were passed on
    (
        {"model": "m", "messages": HI, "reasoning_effort": "extreme"},
        ErrorKind.INVALID_REQUEST,
        "reasoning_effort",
    ),
    (
        {
            "model": "m",
            "messages": HI,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": "notaschema"},
            },
        },
        ErrorKind.INVALID_REQUEST,
        "response_format.json_schema.schema",
    ),
    (
        {"model": "m", "messages": HI, "response_format": {"type": "json_schema"}},
        ErrorKind.INVALID_REQUEST,
        "response_format.json_schema",
    ),
    (
        {
            "model": "m",
            "messages": HI,
            "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
        },
        ErrorKind.INVALID_REQUEST,
        "response_format.json_schema.name",
    ),
    ({"model": "m", "messages": HI, "service_tier": 5}, ErrorKind.INVALID_REQUEST, "service_tier"),
    ({"model": "m", "messages": HI, "store": "yes"}, ErrorKind.INVALID_REQUEST, "store"),
    ({"model": "m", "messages": HI, "modalities": [1]}, ErrorKind.INVALID_REQUEST, "modalities[0]"),
    ({"model": "m", "messages": HI, "prediction": "x"}, ErrorKind.INVALID_REQUEST, "prediction"),
    ({"model": "m", "messages": HI, "tools": {}}, ErrorKind.INVALID_REQUEST, "tools"),
    (
        {"model": "m", "messages": HI, "tools": [{"type": "function"}]},
        ErrorKind.INVALID_REQUEST,
        "tools[0].function.name",
    ),
]

BAD_ANTHROPIC: list[tuple[bytes | dict[str, Any], ErrorKind, str | None]] = [
    (b'{"model": ', ErrorKind.INVALID_JSON, None),
    (b'"text"', ErrorKind.INVALID_REQUEST, None),
    ({"model": "m", "messages": HI}, ErrorKind.INVALID_REQUEST, "max_tokens"),
    ({"max_tokens": 5, "messages": HI}, ErrorKind.INVALID_REQUEST, "model"),
    ({"model": "m", "max_tokens": 0, "messages": HI}, ErrorKind.INVALID_REQUEST, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": []}, ErrorKind.INVALID_REQUEST, "messages"),
    (
        {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].role",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": None}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].content",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]},
        ErrorKind.INVALID_REQUEST,
        "messages[0].content",
    ),
    (
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "text"}]}],
        },
        ErrorKind.INVALID_REQUEST,
        "messages[0].content[0].text",
    ),
    (
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}
            ],
        },
        ErrorKind.INVALID_REQUEST,
        "messages[0].content[0].type",
    ),
    (
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
        },
        ErrorKind.INVALID_REQUEST,
        "messages[0].content[0].tool_use_id",
    ),
    (
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
        },
        ErrorKind.INVALID_REQUEST,
        "messages[0].content[0].source",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "system": 5},
        ErrorKind.INVALID_REQUEST,
        "system",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "system": [{"type": "image"}]},
        ErrorKind.INVALID_REQUEST,
        "system",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "stream": "true"},
        ErrorKind.INVALID_REQUEST,
        "stream",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "temperature": 1.5},
        ErrorKind.INVALID_REQUEST,
        "temperature",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "top_k": 0},
        ErrorKind.INVALID_REQUEST,
        "top_k",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "metadata": "x"},
        ErrorKind.INVALID_REQUEST,
        "metadata",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "metadata": {"user_id": 1}},
        ErrorKind.INVALID_REQUEST,
        "metadata.user_id",
    ),
    (  # an end-user id goes into every ledger record and names a budget bucket
        {"model": "m", "max_tokens": 5, "messages": HI, "metadata": {"user_id": "u" * 257}},
        ErrorKind.INVALID_REQUEST,
        "metadata.user_id",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "stop_sequences": "x"},
        ErrorKind.INVALID_REQUEST,
        "stop_sequences",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "stop_sequences": [1]},
        ErrorKind.INVALID_REQUEST,
        "stop_sequences",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "tools": [{"name": "t"}]},
        ErrorKind.INVALID_REQUEST,
        "tools[0].input_schema",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "tools": [{"input_schema": {}}]},
        ErrorKind.INVALID_REQUEST,
        "tools[0].name",
    ),
    (
        {"model": "m", "max_tokens": 5, "messages": HI, "tool_choice": {"type": "maybe"}},
        ErrorKind.INVALID_REQUEST,
        "tool_choice",
    ),
    (  # a tool call required with no tool offered
        {"model": "m", "max_tokens": 5, "messages": HI, "tool_choice": {"type": "any"}},
        ErrorKind.INVALID_REQUEST,
        "tool_choice",
    ),
    (  # a named tool the request does not offer (Anthropic's API refuses it too)
        {
            "model": "m",
            "max_tokens": 5,
            "messages": HI,
            "tool_choice": {"type": "tool", "name": "x"},
            "tools": [{"name": "y", "input_schema": {}}],
        },
        ErrorKind.INVALID_REQUEST,
        "tool_choice.name",
    ),
]


@pytest.mark.parametrize(
    ("dialect", "body", "kind", "param"),
    [("openai", *case) for case in BAD_OPENAI]
    + [("anthropic", *case) for case in BAD_ANTHROPIC]
    + [
        (
            "openai",
            {"model": "m", "messages": HI, "user": "u" * 257},
            ErrorKind.INVALID_REQUEST,
            "user",
        )
    ],
)
def test_validation_errors(
    dialect: Dialect, body: bytes | dict[str, Any], kind: ErrorKind, param: str | None
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(CallerError) as info:
        DIALECTS[dialect].parse_request(raw)
    assert (info.value.kind, info.value.param, info.value.status) == (kind, param, 400)


def test_an_end_user_id_of_256_characters_is_taken() -> None:
    assert parse("openai", {"model": "m", "messages": HI, "user": "u" * 256}).end_user == "u" * 256
    for field in ("user", "safety_identifier"):
        body = orjson.dumps({"model": "m", "input": "hi", field: "u" * 257})
        with pytest.raises(CallerError) as info:
            DIALECTS["responses"].parse_request(body)
        assert info.value.param == field


# --- errors ------------------------------------------------------------------------


def test_render_error_openai() -> None:
    err = PolicyError(
        ErrorKind.BUDGET_EXCEEDED, "Team budget exhausted", details={"limit_usd": 10.0}
    )
    assert orjson.loads(render_error("openai", err)) == {
        "error": {
            "message": "Team budget exhausted",
            "type": "budget_exceeded",
            "param": None,
            "code": "budget_exceeded",
            "limit_usd": 10.0,
        }
    }
    assert err.status == 429


def test_render_error_anthropic() -> None:
    err = CallerError(ErrorKind.UNKNOWN_ROUTE, "no route 'x'", param="model")
    assert orjson.loads(render_error("anthropic", err)) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no route 'x'"},
    }
    assert err.status == 404


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_renders_in_both_dialects(kind: ErrorKind) -> None:
    err = GatewayError(kind, "boom")
    assert orjson.loads(render_error("openai", err))["error"]["code"] == kind.value
    assert orjson.loads(render_error("anthropic", err))["error"]["type"] == kind.info.anthropic_type


# --- render_completion ---------------------------------------------------------------

TOOL_COMPLETION = Completion(
    id="c-1",
    model="up-model",
    text="Checking.",
    finish_reason="tool_calls",
    usage=Usage(12, 8),
    tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),),
    wire="openai",
)


def test_native_body_is_passed_through_for_same_wire() -> None:
    native = {"id": "x", "whatever": [1, 2], "choices": []}
    c = Completion("x", "m", "", "stop", Usage(1, 1), wire="openai", native=native)
    req = parse("openai", {"model": "m", "messages": HI})
    assert orjson.loads(DIALECTS["openai"].render_completion(c, req)) == native


def test_openai_render_completion_validates_with_sdk() -> None:
    req = parse("openai", {"model": "m", "messages": HI})
    c = Completion(
        **{**_fields(TOOL_COMPLETION), "wire": "anthropic", "native": {"type": "message"}}
    )
    out = ChatCompletion.model_validate_json(DIALECTS["openai"].render_completion(c, req))
    msg = out.choices[0].message
    assert (out.id, out.model, msg.content, out.choices[0].finish_reason) == (
        "chatcmpl-c-1",  # an Anthropic answer's id, in the caller's shape
        "up-model",
        "Checking.",
        "tool_calls",
    )
    assert (
        msg.tool_calls is not None and msg.tool_calls[0].function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
    )
    assert out.usage is not None and (out.usage.prompt_tokens, out.usage.total_tokens) == (12, 20)


def test_anthropic_render_completion_validates_with_sdk() -> None:
    req = parse("anthropic", {"model": "m", "max_tokens": 9, "messages": HI})
    out = Message.model_validate_json(DIALECTS["anthropic"].render_completion(TOOL_COMPLETION, req))
    assert (
        out.stop_reason == "tool_use"
        and out.usage.input_tokens == 12
        and out.usage.output_tokens == 8
    )
    assert [b.type for b in out.content] == ["text", "tool_use"]
    assert out.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert out.id == "msg_c-1"  # an OpenAI answer's id, in the caller's shape
    c = Completion(**{**_fields(TOOL_COMPLETION), "id": "chatcmpl-B9M"})
    assert orjson.loads(DIALECTS["anthropic"].render_completion(c, req))["id"] == "msg_B9M"


def test_an_id_already_in_the_callers_shape_is_kept() -> None:
    for dialect, id_ in (("openai", "chatcmpl-9x"), ("anthropic", "msg_01X")):
        c = Completion(**{**_fields(TOOL_COMPLETION), "id": id_})
        req = parse(dialect, {"model": "m", "max_tokens": 9, "messages": HI})
        assert orjson.loads(DIALECTS[dialect].render_completion(c, req))["id"] == id_


def test_anthropic_stream_id_takes_the_callers_shape() -> None:
    start = sse_data(encode("anthropic", anthropic_stream_req(), TEXT_EVENTS))[0]
    assert start[0] == "message_start" and start[1]["message"]["id"] == "msg_id-1"


def _fields(c: Completion) -> dict[str, Any]:
    return {name: getattr(c, name) for name in Completion.__dataclass_fields__}


# --- stream encoders ----------------------------------------------------------------

TEXT_EVENTS: list[StreamEvent] = [
    StreamStart("id-1", "up-model"),
    TextDelta("Hel"),
    TextDelta(""),
    TextDelta("lo ✓"),
    StreamEnd("length"),
    UsageReport(Usage(11, 2)),
]
TOOL_EVENTS: list[StreamEvent] = [
    StreamStart("id-2", "up-model", Usage(40, 0)),
    TextDelta("Let me look."),
    ToolCallDelta(0, "call_a", "get_weather", ""),
    ToolCallDelta(0, None, None, '{"city":'),
    ToolCallDelta(0, None, None, ' "Paris"}'),
    ToolCallDelta(1, "call_b", "get_time", "{}"),
    UsageReport(Usage(40, 25)),  # before StreamEnd: encoders must reorder
    StreamEnd("tool_calls"),
]


def encode(dialect: Dialect, req: ChatRequest, events: list[StreamEvent]) -> bytes:
    enc = DIALECTS[dialect].new_stream_encoder(req)
    return b"".join(enc.encode(e) for e in events) + enc.finish()


def openai_stream_req(include_usage: bool = True) -> ChatRequest:
    body = {
        "model": "m",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    return parse("openai", body)


def anthropic_stream_req() -> ChatRequest:
    return parse("anthropic", {"model": "m", "max_tokens": 9, "messages": HI, "stream": True})


def test_openai_encoder_text_stream_parses_with_sdk() -> None:
    raw = encode("openai", openai_stream_req(), TEXT_EVENTS)
    final = openai_sdk_final(raw)
    assert final.choices[0].message.content == "Hello ✓"
    assert final.choices[0].finish_reason == "length"
    assert final.usage is not None and (
        final.usage.prompt_tokens,
        final.usage.completion_tokens,
    ) == (11, 2)
    chunks = [data for _, data in sse_data(raw)[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert {c["id"] for c in chunks} == {"chatcmpl-id-1"}  # every chunk, in OpenAI's shape


def test_openai_encoder_tool_stream_puts_usage_last() -> None:
    raw = encode("openai", openai_stream_req(), TOOL_EVENTS)
    final = openai_sdk_final(raw)
    msg = final.choices[0].message
    assert msg.content == "Let me look." and final.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls is not None
    assert [(t.id, t.function.name, t.function.arguments) for t in msg.tool_calls] == [  # type: ignore[union-attr]
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", "{}"),
    ]
    chunks = [data for _, data in sse_data(raw)[:-1]]
    assert chunks[-1]["usage"]["total_tokens"] == 65 and chunks[-1]["choices"] == []


def test_openai_encoder_drops_usage_unless_asked() -> None:
    raw = encode("openai", openai_stream_req(include_usage=False), TEXT_EVENTS)
    assert all("usage" not in data for _, data in sse_data(raw)[:-1])
    assert raw.endswith(b"data: [DONE]\n\n")


def test_openai_encoder_error_has_no_done() -> None:
    enc = DIALECTS["openai"].new_stream_encoder(openai_stream_req())
    enc.encode(StreamStart("i", "m"))
    out = enc.error(ProviderError(ErrorKind.STREAM_INTERRUPTED, "upstream died"))
    assert sse_data(out) == [
        (
            None,
            {
                "error": {
                    "message": "upstream died",
                    "type": "server_error",
                    "param": None,
                    "code": "stream_interrupted",
                }
            },
        )
    ]
    assert b"[DONE]" not in out


def test_anthropic_encoder_text_stream_parses_with_sdk() -> None:
    raw = encode("anthropic", anthropic_stream_req(), TEXT_EVENTS)
    final = anthropic_sdk_final(raw)
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "Hello ✓"  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens"
    # input tokens unknown at message_start: 0 there, the real count in message_delta.
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 2)
    names = [name for name, _ in sse_data(raw)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_encoder_tool_stream_parses_with_sdk() -> None:
    raw = encode("anthropic", anthropic_stream_req(), TOOL_EVENTS)
    events = sse_data(raw)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 40
    final = anthropic_sdk_final(raw)
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert (final.content[2].id, final.content[2].name) == ("call_b", "get_time")  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 25)
    names = [name for name, _ in events]
    assert names.index("message_delta") == len(names) - 2
    assert names.count("content_block_start") == names.count("content_block_stop") == 3


def test_anthropic_encoder_finish_without_usage_still_closes() -> None:
    enc = DIALECTS["anthropic"].new_stream_encoder(anthropic_stream_req())
    raw = enc.encode(StreamStart("i", "m")) + enc.encode(TextDelta("x")) + enc.finish()
    final = anthropic_sdk_final(raw)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 0


def test_anthropic_encoder_usage_after_end_emits_delta_once() -> None:
    enc = DIALECTS["anthropic"].new_stream_encoder(anthropic_stream_req())
    enc.encode(StreamStart("i", "m"))
    enc.encode(TextDelta("x"))
    held = enc.encode(StreamEnd("stop"))
    assert b"content_block_stop" in held and b"message_delta" not in held
    delta = enc.encode(UsageReport(Usage(3, 1)))
    assert [name for name, _ in sse_data(delta)] == ["message_delta"]
    assert enc.finish() == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def test_anthropic_encoder_error() -> None:
    enc = DIALECTS["anthropic"].new_stream_encoder(anthropic_stream_req())
    out = enc.error(ProviderError(ErrorKind.STREAM_INTERRUPTED, "upstream died"))
    assert sse_data(out) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream died"}})
    ]


@pytest.mark.parametrize(
    ("body", "kind", "says"),
    [
        (b'{"model": "chat", "x": "caf\xe9"}', ErrorKind.INVALID_JSON, "not valid UTF-8"),
        (b'{"model": "\xff\xfe"}', ErrorKind.INVALID_JSON, "not valid UTF-8"),
        (b'{"model": "chat", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         ErrorKind.INVALID_REQUEST, "nested deeper than 128 levels"),
        (b'{"model": "chat", "x": ' + b"[" * 200 + b"]" * 200 + b"}",
         ErrorKind.INVALID_REQUEST, "nested deeper than 128 levels"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_an_unreadable_body_is_told_what_is_wrong_with_it(
    dialect: Dialect, body: bytes, kind: ErrorKind, says: str
) -> None:
    """Bytes that are not UTF-8 are called that, with where (orjson's own message spoke of
    "surrogates" for a Latin-1 byte); JSON nested past orjson's own limit gets the same
    message as past the gateway's 128 levels (it was "depth limit exceeded", as invalid JSON)."""
    with pytest.raises(CallerError) as info:
        DIALECTS[dialect].parse_request(body)
    assert info.value.kind is kind
    assert says in info.value.message and "surrogate" not in info.value.message
