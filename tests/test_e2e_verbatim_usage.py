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
  writes it, the rest of the body as the provider sent it.
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
