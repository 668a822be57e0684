"""What a verbatim relay tells the caller about usage is what the ledger bills, over real sockets.

When the caller speaks the provider's wire the provider's bytes go through as they came
(:mod:`trioproxy.providers.passthrough`). When the provider's usage is none or no usage the
ledger bills the gateway's estimate (:meth:`~trioproxy.upstream.meter.Meter.final`), and the
caller must read that same usage, as a decoded answer's caller does:

* an Anthropic stream's ``message_delta`` (which must carry a usage) is held back and written
  with the usage billed once the attempt has metered the rest: the thinking, the text, the tool
  call, each counted once (by the attempt's meter); the ``message_stop`` after it in the same
  read follows it;
* a whole OpenAI chat answer without ``usage`` gets the usage billed, as the decoding path
  writes it, the rest of the body as the provider sent it;
* an OpenAI stream without a usable usage chunk, whose caller asked for usage, ends with a
  usage-only chunk of the gateway's before ``[DONE]`` (held back until the rest is metered),
  as the decoding path's encoder writes it; a drained one too;
* a whole Anthropic answer whose usage never says its input count is no usage, as a stream's
  is: the estimate is billed, and its caller (same wire or not) reads it.
"""

from __future__ import annotations

import tempfile
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway
from tests.settings_factory import KEY, capped_settings, chain_settings
from tests.upstream_servers import FixedAnswer, InParts
from trioproxy.core.sse import SSEParser
from trioproxy.core.tokens import estimate_tokens
from trioproxy.core.types import Usage
from trioproxy.core.usage import anthropic_json, openai_json

AUTH = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]


async def records(g: Running, n: int = 1) -> list[Any]:
    with trio.fail_after(20):  # the record is made once the response is over
        while len(got := [r for r in g.sink.records if r.kind == "request"]) < n:
            await trio.sleep(0.01)
    return got


def billed(record: Any) -> Usage:
    return Usage(
        record.input_tokens, record.output_tokens, estimated=record.estimated,
        cache_read_tokens=record.cache_read_tokens,
        cache_write_5m_tokens=record.cache_write_5m_tokens,
        cache_write_1h_tokens=record.cache_write_1h_tokens,
        reasoning_tokens=record.reasoning_tokens,
    )  # fmt: skip


# --- an Anthropic stream whose final usage is none or no usage ------------------------------


def ev(kind: str, **data: object) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def block_delta(index: int, **delta: object) -> bytes:
    return ev("content_block_delta", index=index, delta=delta)


THOUGHT = "The user wants the weather in Paris, so I should call the weather tool."
TEXTS = ["I will look that up", " for you."]
ARGS = ['{"city":', ' "Paris"}']
TOOL = "get_weather"
OUTPUT = (
    estimate_tokens(THOUGHT) + sum(map(estimate_tokens, TEXTS)) + estimate_tokens(TOOL)
    + sum(map(estimate_tokens, ARGS))
)  # fmt: skip
"""The gateway's estimate of the answer (what a decoded stream's meter counts)."""

USAGES: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    # message_start's usage, message_delta's (None: it has none)
    "odd": ({"input_tokens": 25, "output_tokens": 1}, {"output_tokens": 1e30}),
    "no input count": ({"input_tokens": None, "output_tokens": 1}, {"output_tokens": 9}),
    "none": ({"input_tokens": 25, "output_tokens": 1}, None),
}


def message_stream(usage: str) -> tuple[bytes, bytes, bytes]:
    """A thinking block, a text block and a tool call: the head (``message_start``), the
    content, and the end (``message_delta`` whose usage is none or no usage, then
    ``message_stop``)."""
    start, final = USAGES[usage]
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": start}  # fmt: skip
    head = ev("message_start", message=message)
    content = (
        ev("content_block_start", index=0,
           content_block={"type": "thinking", "thinking": "", "signature": ""})
        + block_delta(0, type="thinking_delta", thinking=THOUGHT)
        + block_delta(0, type="signature_delta", signature="sig_1")
        + ev("content_block_stop", index=0)
        + ev("content_block_start", index=1, content_block={"type": "text", "text": ""})
        + b"".join(block_delta(1, type="text_delta", text=t) for t in TEXTS)
        + ev("content_block_stop", index=1)
        + ev("content_block_start", index=2,
             content_block={"type": "tool_use", "id": "toolu_1", "name": TOOL, "input": {}})
        + b"".join(block_delta(2, type="input_json_delta", partial_json=a) for a in ARGS)
        + ev("content_block_stop", index=2)
    )  # fmt: skip
    delta: dict[str, Any] = {"delta": {"stop_reason": "tool_use", "stop_sequence": None}}
    if final is not None:
        delta["usage"] = final
    return head, content, ev("message_delta", **delta) + ev("message_stop")


def layout(name: str, head: bytes, content: bytes, end: bytes) -> list[bytes]:
    """The parts the upstream writes, each read apart from the next."""
    delta, stop = end.split(b"\n\n", 1)
    delta += b"\n\n"
    return {
        "whole": [head + content + end],  # in the first read: before the race is won
        "delta and stop in one read": [head, content + end],
        "delta and stop apart": [head, content + delta, stop],
    }[name]


@pytest.mark.parametrize("capped", [False, True], ids=["plain", "capped"])
@pytest.mark.parametrize("reads", ["whole", "delta and stop in one read", "delta and stop apart"])
@pytest.mark.parametrize("usage", list(USAGES))
async def test_an_anthropic_callers_message_delta_says_what_the_ledger_bills(
    nursery: trio.Nursery, usage: str, reads: str, capped: bool
) -> None:
    """The tap wrote its own count of the answer into ``message_delta`` (its estimate of the
    events it decoded, counted a second time for this) and only the output tokens; a
    ``message_delta`` without a usage went through without one. The caller now reads the
    usage billed, input and cache buckets too (a prompt the provider never counted is billed
    the gateway's estimate of it), each token of the thinking, the text and the tool call
    counted once; everything before it is the provider's bytes, ``message_stop`` follows."""
    head, content, end = message_stream(usage)
    upstream = InParts(parts=layout(reads, head, content, end))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    settings = (
        capped_settings(url, tempfile.mkdtemp(prefix="tp-"), kind="anthropic", daily_usd=5.0)
        if capped  # the relay is metered event by event (its budget checked after each)
        else chain_settings([url], kinds=["anthropic"])
    )
    g = await start_gateway(nursery, settings)
    body = {"model": "r", "messages": MSGS, "max_tokens": 100, "stream": True}
    read = b""
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream("POST", g.url + "/v1/messages", json=body, headers=AUTH) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                read += chunk
                seen = (b"event: message_start", b"event: message_delta")  # a part is out:
                for gate, mark in zip(upstream.gates, seen, strict=False):  # the next one
                    if mark in read:
                        gate.set()
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated, record
    assert read.startswith(head + content), read  # the provider's bytes, as they came
    events = [orjson.loads(e.data) for e in SSEParser().feed(read[len(head + content) :])]
    assert [e["type"] for e in events] == ["message_delta", "message_stop"]
    delta = events[0]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == anthropic_json(billed(record))
    assert delta["usage"]["output_tokens"] == record.output_tokens == OUTPUT
    assert record.reasoning_tokens == estimate_tokens(THOUGHT)  # within the output, once
    if usage == "no input count":  # the prompt's estimate, not 0
        assert delta["usage"]["input_tokens"] == record.input_tokens > 0
    else:  # message_start's count
        assert delta["usage"]["input_tokens"] == record.input_tokens == 25


# --- a whole answer without usage ---------------------------------------------------------


CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sunny and mild.",
                                         "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "system_fingerprint": "fp_upstream",
}  # fmt: skip


@pytest.mark.parametrize("usage", ["absent", "null"])
async def test_a_whole_openai_answer_without_usage_says_what_the_ledger_bills(
    nursery: trio.Nursery, usage: str
) -> None:
    """A same-wire chat completion without ``usage`` (an OpenAI-compatible server that sends
    none) was relayed as it came, no usage, while the ledger billed the gateway's estimate.
    The caller now reads the usage billed, as the decoding path writes it; the rest of the
    body is the provider's."""
    answer = CHAT if usage == "absent" else {**CHAT, "usage": None}
    upstream = FixedAnswer(body=orjson.dumps(answer))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chain_settings([url]))
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + "/v1/chat/completions", headers=AUTH,
                         json={"model": "r", "messages": MSGS})  # fmt: skip
    assert r.status_code == 200, r.text
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated, record
    got = r.json()
    assert got["usage"] == openai_json(billed(record))
    assert got["usage"]["completion_tokens"] == record.output_tokens > 0
    assert got["usage"]["prompt_tokens"] == record.input_tokens > 0
    assert {k: v for k, v in got.items() if k != "usage"} == {
        k: v for k, v in answer.items() if k != "usage"
    }
    assert list(got) == [*(k for k in answer if k != "usage"), "usage"] or list(got) == list(
        answer
    )  # the provider's fields in its order: a null usage stays where it was


MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "text", "text": "Sunny and mild."}],
    "stop_reason": "end_turn", "stop_sequence": None,
}  # fmt: skip
RESPONSE = {
    "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-x",
    "output": [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Sunny and mild.",
                             "annotations": []}]}],
}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "kind", "answer"),
    [("/v1/messages", "anthropic", MESSAGE), ("/v1/responses", "openai", RESPONSE)],
    ids=["anthropic", "responses"],
)
async def test_a_whole_answer_of_the_other_wires_without_usage_is_not_served_as_it_came(
    nursery: trio.Nursery, path: str, kind: str, answer: dict[str, Any]
) -> None:
    """The Anthropic and Responses wires require a usage in a whole answer: one without is a
    failed attempt (the next target, or a 502), never relayed without the usage billed. (No
    fix: these wires never had the OpenAI one's gap; this says so.)"""
    upstream = FixedAnswer(body=orjson.dumps(answer))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chain_settings([url], kinds=[kind]))
    body: dict[str, Any] = {"model": "r"}
    body.update({"messages": MSGS, "max_tokens": 100} if path == "/v1/messages"
                else {"input": "Weather?"})  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + path, headers=AUTH, json=body)
    assert r.status_code == 502, r.text
    (record,) = await records(g)
    assert record.status == 502 and record.output_tokens == 0 and record.cost_micros == 0


# --- an OpenAI stream without a usable usage chunk ------------------------------------------


HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-x", "system_fingerprint": "fp_upstream"}  # fmt: skip
REASONING = "The user wants the weather in Paris: the weather tool."
SAID = ["Let me", " look that up."]
CALL = ['{"city":', ' "Paris"}']
CHAT_OUTPUT = (
    estimate_tokens(REASONING) + sum(map(estimate_tokens, SAID)) + estimate_tokens(TOOL)
    + sum(map(estimate_tokens, CALL))
)  # fmt: skip
"""The gateway's estimate of the answer (what a decoded stream's meter counts)."""
ODD_COUNTS = {"prompt_tokens": 25, "completion_tokens": 1e30, "total_tokens": 1e30}


def chat_chunk(delta: dict[str, Any] | None, finish: str | None = None, **more: Any) -> bytes:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    ]  # fmt: skip
    return b"data: " + orjson.dumps({**HEAD, "choices": choices, **more}) + b"\n\n"


def chat_stream(usage: str) -> tuple[bytes, bytes, bytes]:
    """Streamed reasoning, text and a tool call: the head (the first chunk), the content up to
    the finish chunk and the usage (none, or counts that are no counts: alone, or on the finish
    chunk), and ``[DONE]``."""
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": TOOL, "arguments": ""}}  # fmt: skip
    head = chat_chunk({"role": "assistant", "content": ""})
    content = (
        chat_chunk({"reasoning_content": REASONING})
        + b"".join(chat_chunk({"content": t}) for t in SAID)
        + chat_chunk({"tool_calls": [call]})
        + b"".join(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})
                   for a in CALL)
    )  # fmt: skip
    if usage == "odd on the finish chunk":
        content += chat_chunk({}, "tool_calls", usage=ODD_COUNTS)
    else:
        content += chat_chunk({}, "tool_calls")
    if usage == "odd":
        content += chat_chunk(None, usage=ODD_COUNTS)
    return head, content, b"data: [DONE]\n\n"


def usage_chunk(usage: Usage) -> bytes:
    """The usage-only chunk the gateway writes: the stream's small fields, the usage billed
    as the decoding path's encoder writes it."""
    return chat_chunk(None, usage=openai_json(usage))


CHAT_READS = {  # the parts the upstream writes, each read apart from the next
    "whole": lambda head, content, done: [head + content + done],
    "content and [DONE] in one read": lambda head, content, done: [head, content + done],
    "[DONE] apart": lambda head, content, done: [head, content, done],
}
CHAT_USAGES = ["none", "odd", "odd on the finish chunk"]


def chat_settings(url: str, capped: bool) -> Any:
    if capped:  # the relay is metered event by event (its budget checked after each)
        return capped_settings(url, tempfile.mkdtemp(prefix="tp-"), daily_usd=5.0)
    return chain_settings([url])


def as_relayed(content: bytes) -> bytes:
    """``content`` as a verbatim relay forwards it: a finish chunk's odd usage left out."""
    odd = chat_chunk({}, "tool_calls", usage=ODD_COUNTS)
    return content.replace(odd, chat_chunk({}, "tool_calls"))


@pytest.mark.parametrize("capped", [False, True], ids=["plain", "capped"])
@pytest.mark.parametrize("reads", list(CHAT_READS))
@pytest.mark.parametrize("usage", CHAT_USAGES)
async def test_an_openai_callers_stream_ends_with_the_usage_the_ledger_bills(
    nursery: trio.Nursery, usage: str, reads: str, capped: bool
) -> None:
    """An OpenAI-compatible server that sends no usage chunk, or one whose counts are no
    counts (alone, or on the finish chunk), to a caller that asked for usage
    (``stream_options.include_usage``): the caller read no usage at all while the ledger
    billed the gateway's estimate. It now reads a usage-only chunk of the gateway's before
    ``[DONE]``, with the stream's own small fields and the usage billed (the prompt's estimate,
    the reasoning, text and tool call each counted once); everything before it is the
    provider's bytes (a finish chunk's odd usage left out)."""
    head, content, done = chat_stream(usage)
    upstream = InParts(parts=CHAT_READS[reads](head, content, done))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chat_settings(url, capped))
    body = {"model": "r", "messages": MSGS, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    read = b""
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream("POST", g.url + "/v1/chat/completions", json=body,
                            headers=AUTH) as r:  # fmt: skip
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                read += chunk
                seen = (b'"role":"assistant"', b'"finish_reason":"tool_calls"')  # a part is
                for gate, mark in zip(upstream.gates, seen, strict=False):  # out: the next one
                    if mark in read:
                        gate.set()
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated, record
    assert record.output_tokens == CHAT_OUTPUT and record.input_tokens > 0
    assert record.reasoning_tokens == estimate_tokens(REASONING)  # within the output, once
    assert (
        read
        == head
        + as_relayed(content).replace(chat_chunk(None, usage=ODD_COUNTS), b"")
        + usage_chunk(billed(record))
        + done
    ), read[-600:]


@pytest.mark.parametrize("capped", [False, True], ids=["plain", "capped"])
@pytest.mark.parametrize("reads", list(CHAT_READS))
@pytest.mark.parametrize("usage", ["none", "odd"])
async def test_the_openai_sdk_reads_the_usage_the_ledger_bills(
    nursery: trio.Nursery, usage: str, reads: str, capped: bool
) -> None:
    """The same through the official SDK: its last chunk's usage is the ledger's record."""
    import openai

    head, content, done = chat_stream(usage)
    upstream = InParts(parts=CHAT_READS[reads](head, content, done))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chat_settings(url, capped))

    def sdk() -> list[Any]:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        chunks = []
        for chunk in client.chat.completions.create(
            model="r", messages=MSGS, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        ):  # fmt: skip
            chunks.append(chunk)
            finished = any(c.finish_reason for c in chunk.choices)
            n = 0 if len(chunks) == 1 else 1 if finished else -1  # a part is out: the next
            if 0 <= n < len(upstream.gates):
                trio.from_thread.run_sync(upstream.gates[n].set)
        return chunks

    chunks = await trio.to_thread.run_sync(sdk)
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated, record
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.id, last.model, last.system_fingerprint) == ("chatcmpl-1", "gpt-x", "fp_upstream")
    assert last.usage.model_dump(exclude_none=True) == openai_json(billed(record))
    assert last.usage.completion_tokens == record.output_tokens == CHAT_OUTPUT
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("usage", CHAT_USAGES)
async def test_a_caller_that_did_not_ask_for_usage_gets_none(
    nursery: trio.Nursery, usage: str
) -> None:
    """Without ``stream_options.include_usage`` the stream ends as the provider ended it,
    without a usage chunk (the gateway's own request upstream asks for one: a usage chunk
    that came is left out too); the ledger bills the estimate all the same."""
    head, content, done = chat_stream(usage)
    upstream = InParts(parts=[head + content + done])
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chain_settings([url]))
    body = {"model": "r", "messages": MSGS, "stream": True}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + "/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200
    assert (
        r.content
        == head + as_relayed(content).replace(chat_chunk(None, usage=ODD_COUNTS), b"") + done
    )
    (record,) = await records(g)
    assert record.estimated and record.output_tokens == CHAT_OUTPUT


async def test_a_drained_stream_ends_with_the_usage_the_ledger_bills(
    nursery: trio.Nursery,
) -> None:
    """At the drain deadline a stream whose finish chunk is out but whose provider stalls
    before its usage chunk is ended by the gateway: its caller, who asked for usage, got
    ``[DONE]`` alone; it now gets the usage chunk (what the ledger bills) before it, as a
    decoded stream's caller does."""
    import dataclasses

    from tests.upstream_servers import StallAfterFinal

    upstream = StallAfterFinal()
    port = await nursery.start(upstream.serve)
    settings = chain_settings([f"http://127.0.0.1:{port}"])
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, shutdown_grace_s=0.5)
    )
    g = await start_gateway(nursery, settings)
    body = {"model": "r", "messages": MSGS, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    got: list[bytes] = []

    async def stream() -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.post(g.url + "/v1/chat/completions", json=body, headers=AUTH)
            got.append(r.content)

    async with trio.open_nursery() as clients:
        clients.start_soon(stream)
        await upstream.stalled.wait()
        with trio.fail_after(20):  # relayed: its final event is out
            while not any(f() for f in g.app.interrupts.live.values()):
                await trio.sleep(0.01)
        g.shutdown.set()
    (record,) = await records(g)
    assert (record.outcome, record.status, record.estimated) == ("served", 200, True)
    (text,) = got
    tail = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"system_fingerprint":"fp_stall","choices":[],"usage":'
        + orjson.dumps(openai_json(billed(record))) + b"}\n\ndata: [DONE]\n\n"
    )  # fmt: skip
    assert text.endswith(b'"finish_reason":"stop"}]}\n\n' + tail), text
    assert text.count(b'"usage"') == 1


# --- an Anthropic whole answer whose usage never says its input count -----------------------


@pytest.mark.parametrize("caller", ["anthropic", "openai"])
@pytest.mark.parametrize(
    "usage",
    [{"output_tokens": 9}, {"input_tokens": None, "output_tokens": 9, "service_tier": "standard"}],
    ids=["absent", "null"],
)
async def test_an_anthropic_answer_without_an_input_count_says_what_the_ledger_bills(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, usage: dict[str, Any], caller: str
) -> None:
    """An Anthropic(-compatible) whole answer whose usage has no ``input_tokens`` was billed
    0 input tokens, exact, and its caller read 0; the same answer streamed is no usage (the
    gateway's estimate, and a warning). It is no usage here too: the ledger bills the
    estimate (the prompt's, the answer's), the caller reads it (the same wire: over the
    provider's counts, its other usage fields and the rest of its body as they came), and the
    attempt is logged as one whose usage was malformed."""
    import logging

    caplog.set_level(logging.WARNING, logger="trioproxy.edge.handler")
    upstream = FixedAnswer(body=orjson.dumps({**MESSAGE, "usage": usage}))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chain_settings([url], kinds=["anthropic"]))
    path = "/v1/messages" if caller == "anthropic" else "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + path, headers=AUTH,
                         json={"model": "r", "messages": MSGS, "max_tokens": 100})  # fmt: skip
    assert r.status_code == 200, r.text
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated, record
    assert record.input_tokens > 0 and record.output_tokens == estimate_tokens("Sunny and mild.")
    got = r.json()
    if caller == "anthropic":
        assert got["usage"] == {**usage, **anthropic_json(billed(record))}
        assert {k: v for k, v in got.items() if k != "usage"} == MESSAGE
    else:
        assert got["usage"] == openai_json(billed(record))
        assert got["choices"][0]["message"]["content"] == "Sunny and mild."
    warned = [m for m in caplog.messages if "malformed usage" in m]
    assert len(warned) == 1 and "'input_tokens': None" in warned[0], caplog.messages


THOUGHT = "The user asks about Paris. Check the forecast, then answer briefly and plainly."


@pytest.mark.parametrize(
    ("kind", "caller"),
    [("openai", "openai"), ("anthropic", "anthropic"), ("anthropic", "openai")],
)
async def test_a_whole_answers_thinking_is_billed_in_its_estimate(
    nursery: trio.Nursery, kind: str, caller: str
) -> None:
    """A whole answer without a usable usage is billed the gateway's estimate: its thinking
    (an OpenAI-compatible server's ``reasoning_content``, an Anthropic thinking block) counts
    as output and as reasoning tokens, as a streamed answer's does; it was billed as nothing."""
    if kind == "openai":
        message = {**CHAT["choices"][0]["message"], "reasoning_content": THOUGHT}  # type: ignore[index]
        answer: dict[str, Any] = {**CHAT, "choices": [{**CHAT["choices"][0], "message": message}]}  # type: ignore[index]
    else:
        thinking = {"type": "thinking", "thinking": THOUGHT, "signature": "c2ln"}
        answer = {**MESSAGE, "content": [thinking, *MESSAGE["content"]],  # type: ignore[misc]
                  "usage": {"output_tokens": 9}}  # fmt: skip
    upstream = FixedAnswer(body=orjson.dumps(answer))
    url = f"http://127.0.0.1:{await nursery.start(upstream.serve)}"
    g = await start_gateway(nursery, chain_settings([url], kinds=[kind]))
    path = "/v1/messages" if caller == "anthropic" else "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + path, headers=AUTH,
                         json={"model": "r", "messages": MSGS, "max_tokens": 100})  # fmt: skip
    assert r.status_code == 200, r.text
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated, record
    thought = estimate_tokens(THOUGHT)
    assert record.reasoning_tokens == thought > 0
    assert record.output_tokens == thought + estimate_tokens("Sunny and mild.")
    usage = r.json()["usage"]
    said = usage["output_tokens"] if caller == "anthropic" else usage["completion_tokens"]
    assert said == record.output_tokens
