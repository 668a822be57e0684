"""The passthrough tap (pure): forwards same-wire SSE bytes at event boundaries, decodes only
the events the gateway needs, and meters content exactly as the decoding path does."""

from __future__ import annotations

import json
import random
import re

import orjson
import pytest

from trioproxy.core.sse import SSEParser
from trioproxy.core.types import Dialect, StreamEvent, StreamStart, Usage, UsageReport
from trioproxy.errors import ErrorKind, GatewayError, ProviderError
from trioproxy.providers.passthrough import PENDING_MAX, PassthroughTap
from trioproxy.providers.plain_events import plain_anthropic
from trioproxy.providers.registry import adapter_for
from trioproxy.simulator.anthropic_wire import ANTHROPIC
from trioproxy.simulator.openai_wire import OPENAI
from trioproxy.simulator.plan import Intent, make_plan
from trioproxy.simulator.responses_wire import RESPONSES
from trioproxy.upstream.attempt import Meter

TOOL = ("get_weather", "city")


def stream_bytes(
    wire: Dialect, tokens: int, *, tool: bool = False, usage: bool = True, reasoning: bool = False
) -> bytes:
    w = {"openai": OPENAI, "anthropic": ANTHROPIC, "responses": RESPONSES}[wire]
    intent = Intent("m", 12, "what is the weather", None, True, usage, TOOL if tool else None,
                    reasoning=reasoning)  # fmt: skip
    plan = make_plan(intent, tokens, "id-", 0)
    encode = w.chunk_encoder(plan)
    return w.stream_head(plan) + b"".join(encode(p) for p in plan.pieces) + w.stream_tail(plan)


def decoded_meter(wire: Dialect, data: bytes) -> tuple[Meter, list[StreamEvent]]:
    """The full decoding path's view of the same bytes (the reference)."""
    adapter = adapter_for("openai", "responses") if wire == "responses" else adapter_for(wire)
    parser, decoder, meter = SSEParser(), adapter.new_stream_decoder(), Meter()
    events: list[StreamEvent] = []
    for sse in parser.feed(data):
        for event in decoder.feed(sse):
            meter.observe(event)
            events.append(event)
    return meter, events


def splits(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 300)
        out.append(data[i : i + n])
        i += n
    return out


def tap_all(tap: PassthroughTap, pieces: list[bytes]) -> tuple[bytes, int, list[StreamEvent]]:
    forward, events = b"", []
    for piece in pieces:
        got = tap.feed(piece)
        forward += got.forward
        events += got.events
    return forward, tap.output_tokens(), events


@pytest.mark.parametrize("wire", ["openai", "anthropic", "responses"])
@pytest.mark.parametrize("tool", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_forwards_verbatim_and_meters_like_the_decoder(
    wire: Dialect, tool: bool, seed: int
) -> None:
    data = stream_bytes(wire, 40 + seed, tool=tool)
    tap = PassthroughTap(wire, include_usage=True)
    forward, tokens, events = tap_all(tap, splits(data, seed))
    assert forward == data and tap.done
    reference, ref_events = decoded_meter(wire, data)
    meter = Meter()
    for e in events:
        meter.observe(e)
    assert tokens + meter.output_estimate == reference.output_estimate
    assert meter.usage == reference.usage and meter.usage is not None
    assert isinstance(events[0], StreamStart) and events[0] == ref_events[0]
    assert meter.up_front == reference.up_front
    assert meter.finish == reference.finish and meter.finish is not None


@pytest.mark.parametrize("wire", ["openai", "anthropic", "responses"])
@pytest.mark.parametrize("seed", range(4))
def test_feed_events_hands_on_one_event_at_a_time(wire: Dialect, seed: int) -> None:
    """A stream metered event by event (a capped reservation) reads its tokens after each
    event: a read of many events counts only the events handed on so far (the check after
    the crossing event ends the stream there); the bytes and tokens in all are feed's."""
    data = stream_bytes(wire, 30 + seed)
    tap = PassthroughTap(wire, include_usage=True)
    forward, counts, events = b"", [], []
    for piece in [*splits(data, seed), b""]:
        for got in tap.feed_events(piece):
            assert got.content_events <= 1 and got.forward.count(b"\n\n") <= 1
            forward += got.forward
            events += got.events
            counts.append(tap.output_tokens())
    assert forward == data and tap.done
    assert counts == sorted(counts) and len(set(counts)) >= 30  # one more token an event
    reference, _ = decoded_meter(wire, data)
    meter = Meter()
    for e in events:
        meter.observe(e)
    assert counts[-1] + meter.output_estimate == reference.output_estimate


@pytest.mark.parametrize("wire", ["openai", "anthropic", "responses"])
@pytest.mark.parametrize("per_read", [1, 2, 3])
def test_event_aligned_reads_take_the_fast_path_and_meter_the_same(
    wire: Dialect, per_read: int
) -> None:
    """Reads of whole events (what a provider's writes usually give): one content event
    per read is taken by ``feed_plain`` without a parse; the bytes forwarded and the tokens
    metered are the decoder's, as with reads cut anywhere."""
    data = stream_bytes(wire, 60)
    events = [e + b"\n\n" for e in data.split(b"\n\n")[:-1]]
    reads = [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]
    tap = PassthroughTap(wire, include_usage=True)
    forward, plain, got = b"", 0, []
    for read in reads:
        if tap.feed_plain(read):
            forward, plain = forward + read, plain + 1
        else:
            tapped = tap.feed(read)
            forward, got = forward + tapped.forward, got + tapped.events
    assert forward == data and tap.done
    assert (plain > 50) == (per_read == 1)  # the fast path carries the bulk of one-event reads
    reference, _ = decoded_meter(wire, data)
    meter = Meter()
    for e in got:
        meter.observe(e)
    assert tap.output_tokens() + meter.output_estimate == reference.output_estimate


@pytest.mark.parametrize("wire", ["openai", "anthropic", "responses"])
def test_crlf_framing_is_normalised_to_the_same_events(wire: Dialect) -> None:
    data = stream_bytes(wire, 30)
    crlf = data.replace(b"\n", b"\r\n")
    tap = PassthroughTap(wire, include_usage=True)
    forward, tokens, _ = tap_all(tap, [*splits(crlf, 3), b"\r\n"])
    assert forward == data and tap.done
    assert tokens == decoded_meter(wire, data)[0].output_estimate


def test_openai_usage_chunk_is_dropped_when_the_caller_did_not_ask() -> None:
    data = stream_bytes("openai", 20)
    tap = PassthroughTap("openai", include_usage=False)
    forward, _, events = tap_all(tap, [data])
    assert b'"usage":{' not in forward and forward.endswith(b"data: [DONE]\n\n")
    assert any(isinstance(e, UsageReport) for e in events)  # still metered


def test_a_cut_stream_meters_only_complete_events() -> None:
    data = stream_bytes("openai", 20)
    cut = data[: data.index(b"\n\n", len(data) // 2) + 5]  # stops inside an event
    tap = PassthroughTap("openai", include_usage=True)
    forward, tokens, _ = tap_all(tap, [cut])
    assert not tap.done and forward == cut[: cut.rindex(b"\n\n") + 2]
    assert tokens + 0 == decoded_meter("openai", forward)[0].output_estimate


@pytest.mark.parametrize(
    ("wire", "event"),
    [
        ("openai", b'data: {"error":{"message":"overloaded"}}\n\n'),
        ("anthropic", b'event: error\ndata: {"type":"error","error":{"message":"overloaded"}}\n\n'),
        ("responses", b'event: error\ndata: {"type":"error","message":"overloaded"}\n\n'),
        (
            "responses",
            b'event: response.failed\ndata: {"type":"response.failed",'
            b'"response":{"error":{"message":"overloaded"}}}\n\n',
        ),
    ],
)
def test_error_events_raise_like_the_decoder(wire: Dialect, event: bytes) -> None:
    data = stream_bytes(wire, 10)
    head = data[: data.index(b"\n\n") + 2]
    tap = PassthroughTap(wire, include_usage=True)
    tap.feed(head)
    got = tap.feed(event)  # after what came before it in the read (here nothing)
    assert isinstance(got.error, ProviderError) and "overloaded" in str(got.error)
    assert got.forward == b""
    tap = PassthroughTap(wire, include_usage=True)
    tap.feed(head)
    with pytest.raises(ProviderError, match="overloaded"):  # one event at a time: raised
        list(tap.feed_events(event))


def test_garbage_content_is_forwarded_as_it_came_and_counts_nothing() -> None:
    tap = PassthroughTap("openai", include_usage=True)
    data = stream_bytes("openai", 3)
    tap.feed(data[: data.index(b"\n\n") + 2])
    garbage = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}\n\n'
    good = b'data: {"choices":[{"index":0,"delta":{"content":"two words"}}]}\n\n'
    assert tap.feed(garbage + good).forward == garbage + good
    assert tap.output_tokens() == 2


@pytest.mark.parametrize("wire", ["openai", "anthropic", "responses"])
def test_content_is_counted_on_demand_and_kept_aside_bounded(wire: Dialect) -> None:
    data = stream_bytes(wire, 3000)  # far more content bytes than PENDING_MAX
    tap = PassthroughTap(wire, include_usage=True)
    pieces = splits(data, 1)
    most = len(pieces) * 3 // 4
    for piece in pieces[:most]:
        tap.feed(piece)
        assert tap._pending_size <= PENDING_MAX + len(piece)  # counted along the way
    for piece in pieces[most:]:
        tap.feed(piece)
    assert tap.output_tokens() == decoded_meter(wire, data)[0].output_estimate
    assert tap.output_tokens() == decoded_meter(wire, data)[0].output_estimate  # idempotent


def test_an_anthropic_json_delta_naming_text_delta_is_decoded_not_counted() -> None:
    ev = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
          b'"delta":{"type":"input_json_delta","partial_json":"\\"text_delta\\""}}')  # fmt: skip
    assert not plain_anthropic(ev, len(ev))


def _spaced(data: bytes) -> bytes:
    """The same OpenAI stream as a server writing with Python's json.dumps defaults
    (``"usage": {``, ``"finish_reason": null``)."""
    out = []
    for event in data.split(b"\n\n")[:-1]:
        if event.startswith(b"data: {"):
            event = b"data: " + json.dumps(json.loads(event[6:])).encode()
        out.append(event + b"\n\n")
    return b"".join(out)


@pytest.mark.parametrize("per_read", [1, 3])
def test_spaced_json_is_metered_like_the_decoder(per_read: int) -> None:
    """The usage chunk of a server that writes '"usage": {' was taken for content: never
    read, and the request billed on the gateway's estimate (15 µUSD for 9,000)."""
    data = _spaced(stream_bytes("openai", 30))
    assert b'"usage": {' in data and b'"finish_reason": null' in data
    events = [e + b"\n\n" for e in data.split(b"\n\n")[:-1]]
    reads = [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]
    tap = PassthroughTap("openai", include_usage=True)
    forward, got = b"", []
    for read in reads:
        if tap.feed_plain(read):
            forward += read
        else:
            tapped = tap.feed(read)
            forward, got = forward + tapped.forward, got + tapped.events
    assert forward == data and tap.done
    reference, _ = decoded_meter("openai", data)
    meter = Meter()
    for e in got:
        meter.observe(e)
    assert meter.usage == reference.usage and meter.usage is not None
    assert meter.finish == reference.finish and meter.finish is not None


def test_a_spaced_usage_chunk_is_dropped_when_the_caller_did_not_ask() -> None:
    """A server writing '"choices": []' (Python's json.dumps spacing): its usage-only chunk
    reached a caller that did not ask for usage, whose chunk.choices[0] raised."""
    data = _spaced(stream_bytes("openai", 20))
    assert b'"choices": []' in data
    tap = PassthroughTap("openai", include_usage=False)
    forward, _, events = tap_all(tap, [data])
    assert b'"usage": {' not in forward and forward.endswith(b"data: [DONE]\n\n")
    assert any(isinstance(e, UsageReport) for e in events)  # still metered


def test_streamed_reasoning_of_compatible_servers_is_metered_on_both_paths() -> None:
    """OpenAI-compatible servers (DeepSeek, vLLM, Ollama) stream a reasoning model's thinking
    as ``reasoning_content`` (or ``reasoning``) deltas, billed as output. Neither path counted
    it: a stream without usage, or cut by a capped reservation, was billed as if there were
    none. Both count it now, the same."""
    from trioproxy.core.tokens import estimate_tokens

    def chunk(delta: dict[str, object]) -> bytes:
        body = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    thoughts = ["Let me see", " what the user", " wants here"]
    data = (
        chunk({"role": "assistant", "content": ""})
        + b"".join(chunk({"reasoning_content": t}) for t in thoughts)
        + chunk({"reasoning": " and then"})
        + chunk({"content": "Hello there"})
        + b"data: [DONE]\n\n"
    )
    expected = sum(estimate_tokens(t) for t in [*thoughts, " and then"])
    reference, _ = decoded_meter("openai", data)
    decoder = adapter_for("openai").new_stream_decoder()
    for sse in SSEParser().feed(data):
        decoder.feed(sse)
    assert decoder.hidden_tokens == expected > 0
    assert reference.output_estimate == estimate_tokens("Hello there")
    tap = PassthroughTap("openai", include_usage=False)  # ([DONE] without usage: as it came)
    forward, tokens, _ = tap_all(tap, splits(data, 1))
    assert forward == data and tokens == expected + reference.output_estimate


def _events(data: bytes) -> list[dict[str, object]]:
    return [json.loads(e.data) for e in SSEParser().feed(data)]


@pytest.mark.parametrize("tool", [False, True])
def test_responses_events_the_decoder_does_not_model_go_through_as_they_came(tool: bool) -> None:
    """A Responses stream was decoded and re-encoded: events the decoder does not model
    (hosted tools, annotations, new types) and the provider's ids and sequence numbers were
    lost. The tap forwards them as they came; text deltas are counted, not parsed."""
    data = stream_bytes("responses", 30, tool=tool, reasoning=True)
    head, rest = data.split(b"event: response.output_item.added", 1)
    extra = (
        b'event: response.web_search_call.searching\ndata: {"type":"response.web_search_call'
        b'.searching","output_index":9,"item_id":"ws_1","sequence_number":99}\n\n'
        b'event: response.future_thing.delta\ndata: {"type":"response.future_thing.delta",'
        b'"delta":"not text","sequence_number":100}\n\n'
    )
    data = head + extra + b"event: response.output_item.added" + rest
    tap = PassthroughTap("responses", include_usage=False)
    forward, tokens, events = tap_all(tap, splits(data, 2))
    assert forward == data and tap.done
    reference, _ = decoded_meter("responses", data)
    meter = Meter()
    for e in events:
        meter.observe(e)
    assert tokens + meter.output_estimate == reference.output_estimate > 0
    assert meter.usage == reference.usage and meter.usage is not None
    assert meter.finish == reference.finish == ("tool_calls" if tool else "stop")
    assert tap.end_events(Usage(1, 1)) == b""  # response.completed is the end: nothing follows


def test_a_cut_responses_stream_ends_with_the_gateways_event_continuing_the_providers() -> None:
    """When the gateway ends a verbatim Responses stream (the upstream broke, a budget), its
    response.failed / response.incomplete continues the provider's stream: the same response
    id, the next sequence number, the open message with the text the caller has, the usage
    the ledger bills."""
    from trioproxy.core.usage import Usage
    from trioproxy.errors import ErrorKind, GatewayError

    data = stream_bytes("responses", 40, reasoning=True)
    cut = data[: data.index(b"\n\n", len(data) // 2) + 2]
    for budget in (False, True):
        tap = PassthroughTap("responses", include_usage=True)
        forward, _, _ = tap_all(tap, splits(cut, 4))
        assert forward == cut and not tap.done
        sent = _events(forward)
        kind = ErrorKind.BUDGET_EXCEEDED if budget else ErrorKind.STREAM_INTERRUPTED
        end = tap.failure_event(GatewayError(kind, "stopped"), Usage(12, 7))
        assert end.endswith(b"\n\n") and end.count(b"\n\n") == 1
        (last,) = _events(end)
        assert last["sequence_number"] == int(sent[-1]["sequence_number"]) + 1  # type: ignore[call-overload]
        response: dict[str, object] = last["response"]  # type: ignore[assignment]
        created: dict[str, object] = sent[0]["response"]  # type: ignore[assignment]
        assert response["id"] == created["id"] and response["model"] == created["model"]
        assert last["type"] == ("response.incomplete" if budget else "response.failed")
        assert response["status"] == ("incomplete" if budget else "failed")
        assert response["incomplete_details"] == ({"reason": "budget_exceeded"} if budget else None)
        assert response["usage"]["output_tokens"] == 7  # type: ignore[index]
        reasoning, message = response["output"]  # type: ignore[misc]
        done = [e["item"] for e in sent if e["type"] == "response.output_item.done"]
        assert [reasoning] == done and reasoning["type"] == "reasoning"  # as it was done
        text = "".join(str(e["delta"]) for e in sent if e["type"] == "response.output_text.delta")
        assert message["status"] == "incomplete" and message["content"][0]["text"] == text != ""
    assert (
        PassthroughTap("openai", include_usage=True).failure_event(
            GatewayError(ErrorKind.STREAM_INTERRUPTED, "x"), Usage(1, 1)
        )
        == b""
    )  # the caller's encoder writes the other wires' error event


@pytest.mark.parametrize("usage", [b"null", b'{"input_tokens":-1}'])
def test_a_responses_terminal_event_without_usage_is_held_for_the_estimate(usage: bytes) -> None:
    """response.completed with no usage (or counts that are no counts): the ledger bills the
    gateway's estimate, and the caller reads it there (as on the decoding path), not null."""
    from trioproxy.core.usage import Usage

    data = stream_bytes("responses", 20)
    head, completed = data.rsplit(b"event: response.completed", 1)
    completed = re.sub(rb'"usage":\{[^}]*\{[^}]*\}[^}]*\{[^}]*\}[^}]*\}', b'"usage":' + usage,
                       completed)  # fmt: skip
    assert b'"usage":' + usage in completed
    data = head + b"event: response.completed" + completed
    tap = PassthroughTap("responses", include_usage=True)
    forward, finish = b"", None
    for piece in splits(data, 5):
        got = tap.feed(piece)
        forward += got.forward
        finish = got.finish or finish
    assert tap.done and tap.bad_usage and finish is not None
    assert forward == head  # the terminal event is held back
    end = finish(Usage(12, 34, estimated=True))
    (last,) = _events(end)
    assert last["type"] == "response.completed"
    assert last["response"]["usage"]["output_tokens"] == 34  # type: ignore[index]
    assert last["response"]["status"] == "completed"  # type: ignore[index]


def test_what_a_responses_stream_keeps_to_end_it_is_bounded() -> None:
    """Forty image-generation items of 256 KiB each: the tap kept every finished item whole
    for the stream's life (10 MiB); past its bound it keeps their id, type and status."""
    import tracemalloc

    from trioproxy.providers.responses_trail import KEEP_BYTES

    def ev(kind: str, **data: object) -> bytes:
        return (
            b"event: "
            + kind.encode()
            + b"\ndata: "
            + orjson.dumps({"type": kind, **data})
            + b"\n\n"
        )

    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    image = "A" * (256 * 1024)
    tap = PassthroughTap("responses", include_usage=True)
    tap.feed(ev("response.created", sequence_number=0, response=response))
    tracemalloc.start()
    for i in range(40):
        item = {"id": f"ig_{i}", "type": "image_generation_call", "status": "in_progress"}
        tap.feed(ev("response.output_item.added", sequence_number=2 * i + 1, output_index=i,
                    item=item))  # fmt: skip
        done = {**item, "status": "completed", "result": image}
        tap.feed(ev("response.output_item.done", sequence_number=2 * i + 2, output_index=i,
                    item=done))  # fmt: skip
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert kept < KEEP_BYTES + 512 * 1024, kept
    end = tap.failure_event(GatewayError(ErrorKind.STREAM_INTERRUPTED, "cut"), Usage(1, 2))
    output = orjson.loads(end.split(b"data: ", 1)[1])["response"]["output"]
    assert [o["id"] for o in output] == [f"ig_{i}" for i in range(40)]
    assert output[0]["result"] == image and output[-1] == {
        "id": "ig_39", "type": "image_generation_call", "status": "completed",
    }  # fmt: skip


def test_the_events_before_an_upstream_error_in_one_read_are_forwarded() -> None:
    """Text deltas, then the provider's error event, in one read: the read's events before it
    were dropped (yet counted for the bill); they are forwarded, the error comes after."""
    for wire, data in (
        ("openai", stream_bytes("openai", 8)),
        ("anthropic", stream_bytes("anthropic", 8)),
    ):
        tap = PassthroughTap(wire, include_usage=True)  # type: ignore[arg-type]
        first_event = data.index(b"\n\n") + 2
        tap.feed(data[:first_event])
        error = (
            b'data: {"error":{"message":"boom","type":"server_error"}}\n\n' if wire == "openai"
            else b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"boom"}}\n\n'
        )  # fmt: skip
        body = data[first_event:]
        middle = body[: body.index(b"\n\n", len(body) // 2) + 2]
        got = tap.feed(middle + error)
        assert isinstance(got.error, ProviderError) and got.forward == middle
