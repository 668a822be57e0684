"""A usage whose counts are no counts, after a stream's content (pure).

The content the provider sent is complete (its finish reason too), so the stream is not
failed for its usage: every decoder goes on as if no usage came and says why
(``bad_usage``), and a verbatim relay forwards the content and the end but not the
malformed counts: what the ledger bills is written in their place (an OpenAI usage-only chunk
of the gateway's, an Anthropic ``message_delta``'s usage). Before the first byte the attempt
fails instead (tests/test_e2e_odd_usage.py).
"""

from __future__ import annotations

import re

import orjson
import pytest

from tests.test_passthrough import decoded_meter, splits, stream_bytes
from trioproxy.core.sse import SSEParser
from trioproxy.core.types import Dialect, StreamEnd, TextDelta, UsageReport
from trioproxy.core.usage import (
    MAX_TOKENS,
    MalformedUsage,
    anthropic_json,
    openai_json,
    token_count,
)
from trioproxy.providers.openai_responses import ResponsesStreamDecoder
from trioproxy.providers.passthrough import PassthroughTap
from trioproxy.upstream.attempt import Meter
from trioproxy.upstream.relays import meter_tapped

ODD = [b"1e30", b"-1", b"2.5", b'"12"', b"9223372036854775808", str(MAX_TOKENS + 1).encode()]


def with_odd_final_usage(wire: Dialect, data: bytes, odd: bytes) -> bytes:
    """``data`` (a well-formed stream) with its last usage, after the content and its
    finish, odd."""
    field = b'"completion_tokens":' if wire == "openai" else b'"output_tokens":'
    at = data.rindex(field) + len(field)  # the final usage: OpenAI's usage chunk, message_delta
    end = re.compile(rb"\d+").match(data, at)
    assert end is not None
    return data[:at] + odd + data[end.end() :]


def test_a_count_that_is_no_count_is_malformed_usage() -> None:
    with pytest.raises(MalformedUsage, match="completion_tokens"):
        token_count({"completion_tokens": 1e30}, "completion_tokens")
    assert issubclass(MalformedUsage, ValueError)  # a malformed answer wherever it is one


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_the_decoder_keeps_the_content_and_the_end_and_skips_the_usage(
    wire: Dialect, odd: bytes
) -> None:
    data = stream_bytes(wire, 30)
    good_meter, good = decoded_meter(wire, data)
    meter, events = decoded_meter(wire, with_odd_final_usage(wire, data, odd))
    assert [e for e in events if not isinstance(e, UsageReport)] == [
        e for e in good if not isinstance(e, UsageReport)
    ]
    assert any(isinstance(e, StreamEnd) for e in events)
    assert not any(isinstance(e, UsageReport) for e in events)
    assert meter.output_estimate == good_meter.output_estimate > 0
    meter.received_any = True  # (the attempt marks it)
    final = meter.final(12)
    assert final.estimated and final.output_tokens == meter.output_estimate


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_the_decoder_says_why_it_skipped_the_usage(wire: Dialect) -> None:
    from trioproxy.providers.registry import adapter_for

    decoder = adapter_for(wire).new_stream_decoder()
    for sse in SSEParser().feed(with_odd_final_usage(wire, stream_bytes(wire, 30), b"1e30")):
        decoder.feed(sse)
    assert decoder.done
    assert decoder.bad_usage is not None and "1e+30" in decoder.bad_usage


def test_a_responses_stream_completes_without_its_malformed_usage() -> None:
    decoder = ResponsesStreamDecoder()
    response = {"id": "resp_1", "model": "m", "status": "completed", "output": [],
                "usage": {"input_tokens": 12, "output_tokens": 1e30}}  # fmt: skip
    events = []
    for data in (
        {"type": "response.created", "response": {"id": "resp_1", "model": "m"}},
        {"type": "response.output_text.delta", "item_id": "m1", "delta": "Hello"},
        {"type": "response.completed", "response": response},
    ):
        events += decoder.feed(
            next(iter(SSEParser().feed(b"data: " + orjson.dumps(data) + b"\n\n")))
        )
    assert decoder.done and decoder.bad_usage is not None and "output_tokens" in decoder.bad_usage
    assert TextDelta("Hello") in events and StreamEnd("stop") in events
    assert not any(isinstance(e, UsageReport) for e in events)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("tool", [False, True])
def test_a_verbatim_relay_forwards_the_content_and_the_end_not_the_odd_counts(
    wire: Dialect, seed: int, tool: bool
) -> None:
    good = stream_bytes(wire, 30, tool=tool)
    data = with_odd_final_usage(wire, good, b"1e30")
    tap = PassthroughTap(wire, include_usage=True)
    meter = Meter(deferred=tap.output_tokens, hidden=tap.hidden_tokens)  # as the attempt's
    forward = b""
    for piece in splits(data, seed):
        got = tap.feed(piece)
        meter_tapped(meter, got, 12)  # a held final event is written with what is billed
        forward += got.forward
    assert tap.done and tap.bad_usage is not None and "1e+30" in tap.bad_usage
    assert b":1e30" not in forward  # (the ids are random hex and may hold "1e30")
    assert meter.usage is None and meter.finish is not None
    billed = meter.final(12)
    assert billed.output_tokens == decoded_meter(wire, good)[0].output_estimate
    if wire == "openai":  # the usage-only chunk is the gateway's, the rest as it came
        usage_chunk = good[good.rindex(b"data: {") : good.rindex(b"data: [DONE]")]
        first = orjson.loads(good[len(b"data: ") : good.index(b"\n\n")])
        billed_chunk = {"id": first["id"], "object": "chat.completion.chunk",
                        "created": first["created"], "model": first["model"],
                        "system_fingerprint": first["system_fingerprint"], "choices": [],
                        "usage": openai_json(billed)}  # fmt: skip
        assert forward == good.replace(
            usage_chunk, b"data: " + orjson.dumps(billed_chunk) + b"\n\n"
        )
        assert forward.endswith(b"data: [DONE]\n\n")
    else:  # message_delta keeps its stop reason, its usage says what the ledger bills
        delta = [e for e in forward.split(b"\n\n") if e.startswith(b"event: message_delta")]
        body = orjson.loads(delta[0].split(b"data: ", 1)[1])
        assert body["delta"]["stop_reason"] == ("tool_use" if tool else "end_turn")
        assert body["usage"] == anthropic_json(billed) and billed.output_tokens > 0
        assert forward.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        before = good[: good.index(b"event: message_delta")]
        assert forward.startswith(before)
