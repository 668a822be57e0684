"""A Responses caller on a Responses upstream: the stream is relayed verbatim, over real
sockets, and still metered, capped, billed and cancelled as the decoding path did.

It used to be decoded into canonical events and written again by the gateway's encoder:
what the decoder does not model (hosted tools, annotations, log probabilities, new event
types) and the provider's ids and sequence numbers never reached the caller. The simulator's
text deltas put ``"logprobs":[],"sequence_number":`` in an order the gateway's encoder never
writes: their presence in what the caller reads shows the bytes went through as they came.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY, capped_settings, chain_settings
from tests.upstream_servers import STALL_EVENTS, OneWrite, StallAfterFinal
from trioproxy.core.sse import SSEParser
from trioproxy.simulator.faults import Fault

AUTH = {"authorization": f"Bearer {KEY}"}
MARK = b'"logprobs":[],"sequence_number":'
BODY: dict[str, Any] = {"model": "r", "input": "Tell me a story.", "stream": True}


async def wait_for(predicate: Any, limit_s: float = 20) -> None:
    with trio.fail_after(limit_s):
        while not predicate():
            await trio.sleep(0.01)


async def records(g: Running, n: int = 1) -> list[Any]:
    await wait_for(lambda: len([r for r in g.sink.records if r.kind == "request"]) >= n)
    return [r for r in g.sink.records if r.kind == "request"]


async def post_stream(url: str, body: dict[str, Any]) -> bytes:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(url + "/v1/responses", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.content


def events(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in SSEParser().feed(body)]


async def test_events_the_gateway_does_not_model_reach_the_caller_byte_for_byte(
    nursery: trio.Nursery,
) -> None:
    """A hosted tool's item and events, an annotation, an obfuscation field, an event type no
    decoder knows and the provider's ids: the caller reads the upstream's bytes, and the
    request is billed the upstream's usage."""
    upstream = StallAfterFinal()  # its Responses stream ends with response.completed
    port = await nursery.start(upstream.serve)
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}"]))
    body = await post_stream(g.url, BODY)
    assert body == b"".join(STALL_EVENTS["/v1/responses"])
    (record,) = await records(g)
    assert (record.outcome, record.status, record.error_kind) == ("served", 200, None)
    assert (record.input_tokens, record.output_tokens) == (5, 3) and not record.estimated
    await wait_for(lambda: upstream.closed == 1)  # the upstream's body never ended: let go


async def test_drain_leaves_a_verbatim_responses_stream_whole(nursery: trio.Nursery) -> None:
    """The drain deadline cuts a stream whose final event is out and whose upstream stalls:
    a Responses stream's final event (response.completed) is its end, so the caller has the
    whole stream as the provider sent it, nothing added (its end event is empty)."""
    upstream = StallAfterFinal()
    port = await nursery.start(upstream.serve)
    settings = chain_settings([f"http://127.0.0.1:{port}"])
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, shutdown_grace_s=0.5)
    )
    g = await start_gateway(nursery, settings)
    got: dict[str, Any] = {}

    async def stream() -> None:
        try:
            async with httpx.AsyncClient(timeout=30) as c:
                async with c.stream("POST", g.url + "/v1/responses", json=BODY, headers=AUTH) as r:
                    got["status"] = r.status_code
                    got["body"] = b"".join([chunk async for chunk in r.aiter_bytes()])
        except httpx.HTTPError as exc:
            got["error"] = exc

    async with trio.open_nursery() as clients:
        clients.start_soon(stream)
        await upstream.stalled.wait()
        await wait_for(lambda: any(f() for f in g.app.interrupts.live.values()))
        g.shutdown.set()
    assert "error" not in got, got["error"]
    assert got["status"] == 200 and got["body"] == b"".join(STALL_EVENTS["/v1/responses"])
    (record,) = await records(g)
    assert (record.outcome, record.status, record.error_kind) == ("served", 200, None)
    assert (record.input_tokens, record.output_tokens) == (5, 3)


async def test_openai_sdk_parses_the_verbatim_stream_and_the_ledger_bills_its_usage(
    nursery: trio.Nursery,
) -> None:
    sim = await start_simulator(nursery, Fault(tokens=25))
    g = await start_gateway(nursery, chain_settings([sim.url]))
    raw = await post_stream(g.url, BODY)
    assert MARK in raw
    sent = events(raw)
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert sent[-1]["type"] == "response.completed"

    def sdk() -> tuple[list[str], str, Any, Any]:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        kinds, text, created, final = [], [], None, None
        for event in client.responses.create(model="r", input="Tell me a story.", stream=True):
            kinds.append(event.type)
            if event.type == "response.created":
                created = event.response
            elif event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
        return kinds, "".join(text), created, final

    kinds, text, created, final = await trio.to_thread.run_sync(sdk)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == text and final.status == "completed"
    # the provider's ids (the simulator's message id ends as its response id; the gateway's
    # encoder made up unrelated ones)
    assert final.id == created.id and final.output[0].id == "msg_" + final.id[-24:]
    assert final.usage.output_tokens == 25
    rs = await records(g, 2)
    assert [r.output_tokens for r in rs] == [25, 25] and not any(r.estimated for r in rs)
    assert rs[1].input_tokens == final.usage.input_tokens


@pytest.mark.parametrize("usage", ["-1", "null"])
async def test_a_completed_event_without_usage_says_what_the_ledger_bills(
    nursery: trio.Nursery, usage: str
) -> None:
    """The provider's response.completed carries counts that are no counts: the ledger bills
    the gateway's estimate, and the verbatim caller reads that estimate there (as a decoded
    caller does), not the provider's odd counts or null."""
    sim = await start_simulator(nursery, Fault(tokens=20, usage=usage))
    g = await start_gateway(nursery, chain_settings([sim.url]))
    raw = await post_stream(g.url, BODY)
    assert MARK in raw
    final = events(raw)[-1]
    assert final["type"] == "response.completed"
    (record,) = await records(g)
    assert record.estimated and record.output_tokens == 20
    billed = final["response"]["usage"]
    assert (billed["input_tokens"], billed["output_tokens"]) == (
        record.input_tokens,
        record.output_tokens,
    )


async def test_a_budget_capped_verbatim_stream_is_cut_at_the_budget(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    """A capped reservation meters the verbatim stream event by event: the stream ends at the
    budget with the gateway's response.incomplete, which continues the provider's stream (its
    response id, the next sequence number, the partial message) and says the usage billed."""
    sim = await start_simulator(nursery, Fault(tokens=200))
    g = await start_gateway(nursery, capped_settings(sim.url, str(tmp_path)))
    raw = await post_stream(g.url, BODY)
    assert MARK in raw
    sent = events(raw)
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    final = sent[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "budget_exceeded"}
    assert final["response"]["id"] == sent[0]["response"]["id"]
    text = "".join(e["delta"] for e in sent if e["type"] == "response.output_text.delta")
    (message,) = final["response"]["output"]
    assert message["status"] == "incomplete" and message["content"][0]["text"] == text
    (record,) = await records(g)
    # $1,000 per 1M tokens: $0.05 is 50 tokens (prompt included); one event past at most
    assert record.estimated and 0 < record.output_tokens < 50
    assert record.cost_micros <= 50_000 + 1_000
    assert final["response"]["usage"]["output_tokens"] == record.output_tokens


async def test_a_broken_upstream_ends_with_response_failed_continuing_the_stream(
    nursery: trio.Nursery,
) -> None:
    sim = await start_simulator(nursery, Fault(reset_after=5, tokens=40))
    g = await start_gateway(nursery, chain_settings([sim.url]))
    raw = await post_stream(g.url, BODY)
    assert MARK in raw
    sent = events(raw)
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert [e["type"] for e in sent].count("response.created") == 1
    final = sent[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["error"]["code"] == "stream_interrupted"
    assert final["response"]["id"] == sent[0]["response"]["id"]
    (record,) = await records(g)
    assert record.estimated and record.output_tokens == 5
    assert final["response"]["usage"]["output_tokens"] == 5


async def test_a_client_that_leaves_cancels_the_verbatim_upstream(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(chunk_ms=50, tokens=200))
    g = await start_gateway(nursery, chain_settings([sim.url]))
    received = b""
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream("POST", g.url + "/v1/responses", json=BODY, headers=AUTH) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
                if received.count(b"event: response.output_text.delta") >= 3:
                    break  # leaves the block: the connection is closed
    assert MARK in received
    await wait_for(lambda: sim.sim.stats.active == 0 and g.app.in_flight == 0)
    (record,) = await records(g)
    assert (record.status, record.error_kind) == (499, "client_disconnected")
    assert 0 < record.output_tokens < 200 and record.cost_micros > 0


RESP: dict[str, Any] = {
    "id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress", "model": "m",
    "output": [], "usage": None, "error": None, "incomplete_details": None,
}  # fmt: skip
MSG: dict[str, Any] = {
    "id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": [],
}  # fmt: skip


def ev(kind: str, **data: object) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def delta(seq: int, text: str) -> bytes:
    return ev("response.output_text.delta", sequence_number=seq, item_id="msg_1",
              output_index=0, content_index=0, delta=text, logprobs=[])  # fmt: skip


HEAD = (
    ev("response.created", sequence_number=0, response=RESP)
    + ev("response.output_item.added", sequence_number=1, output_index=0, item=MSG)
    + ev("response.content_part.added", sequence_number=2, item_id="msg_1", output_index=0,
         content_index=0, part={"type": "output_text", "text": "", "annotations": []})
)  # fmt: skip


async def test_a_short_stream_without_usage_in_one_read_is_served(nursery: trio.Nursery) -> None:
    """A whole stream whose ``response.completed`` has no usage, in one read (a short answer
    from a fast server): it was a 502, 'All upstream targets failed', while the same bytes in
    two reads were served. It is served, its usage the estimate the ledger bills."""
    done = {**MSG, "status": "completed",
            "content": [{"type": "output_text", "text": "Hello world", "annotations": []}]}  # fmt: skip
    body = (
        HEAD + delta(3, "Hello") + delta(4, " world")
        + ev("response.output_item.done", sequence_number=5, output_index=0, item=done)
        + ev("response.completed", sequence_number=6,
             response={**RESP, "status": "completed", "output": [done], "usage": None})
    )  # fmt: skip
    upstream = OneWrite(body=body)
    port = await nursery.start(upstream.serve)
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}"]))
    got = events(await post_stream(g.url, BODY))
    assert [e["type"] for e in got][-1] == "response.completed"
    (record,) = await records(g)
    assert record.outcome == "served" and record.estimated
    assert got[-1]["response"]["usage"]["output_tokens"] == record.output_tokens == 2


async def test_the_events_before_a_provider_error_in_the_same_read_reach_the_caller(
    nursery: trio.Nursery,
) -> None:
    """Two text deltas and the provider's error event in one read: the deltas were dropped
    (yet billed, and named in the gateway's response.failed); the SDK now reads them, then
    the failure."""
    rest = delta(3, "Hello") + delta(4, " world")
    rest += ev("error", sequence_number=5, code="server_error", message="boom")
    upstream = OneWrite(body=HEAD, rest=rest)
    port = await nursery.start(upstream.serve)
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}"]))
    read = b""
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream("POST", g.url + "/v1/responses", json=BODY, headers=AUTH) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                read += chunk
                if b"response.content_part.added" in read:  # the head is relayed: the rest
                    upstream.go.set()
    got = events(read)
    text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    assert text == "Hello world" and got[-1]["type"] == "response.failed"
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
