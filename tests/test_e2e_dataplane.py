"""The gateway on its data-plane server: slow clients, shedding, descriptors, the drain."""

from __future__ import annotations

import dataclasses
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.fixtures_servers import self_signed_cert
from tests.httpd_helpers import open_fds, read_responses
from tests.settings_factory import KEY, chain_settings
from tests.upstream_servers import (
    END_EVENTS,
    STALL_EVENTS,
    FixedAnswer,
    OneWrite,
    StallAfterFinal,
)
from trioproxy.config import hash_key
from trioproxy.config.model import ApiKeyConfig
from trioproxy.edge.intake import FINISH_GRACE_S
from trioproxy.httpd.server import INTERRUPT_FLUSH_S
from trioproxy.simulator.faults import Fault

OTHER = "tp-other-team-key-987654"
MSGS = [{"role": "user", "content": "hi"}]


def with_other_team(settings: Any) -> Any:
    other = ApiKeyConfig(name="other", key_hash=hash_key(OTHER), team="t2", user="u2")
    return dataclasses.replace(settings, api_keys={**settings.api_keys, other.key_hash: other})


def head(key: str, length: int, path: str = "/v1/chat/completions") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()  # fmt: skip


async def chat(g: Running, key: str, path: str = "/v1/chat/completions", **extra: Any) -> Any:
    body: dict[str, Any] = {"model": "r", "messages": MSGS, **extra}
    if path == "/v1/messages":
        body["max_tokens"] = 16
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.post(g.url + path, json=body,
                            headers={"authorization": f"Bearer {key}", "x-api-key": key})  # fmt: skip


async def wait_for(predicate: Any, limit_s: float = 20) -> None:
    with trio.fail_after(limit_s):
        while not predicate():
            await trio.sleep(0.01)


async def test_slow_clients_of_one_key_cannot_starve_another_team(nursery: trio.Nursery) -> None:
    """A key's slow bodies and slow heads hold only its own slots (body reading counts
    against the key's cap, not against max_in_flight); another team keeps being served."""
    sim = await start_simulator(nursery)
    server = {"max_in_flight": 4, "max_in_flight_per_key": 5, "header_timeout_s": 30,
              "body_timeout_s": 60, "body_grace_s": 30}  # fmt: skip
    g = await start_gateway(nursery, with_other_team(chain_settings([sim.url],
                                                                    extra={"server": server})))  # fmt: skip
    slots = g.app.chat.slots
    streams: list[trio.SocketStream] = []
    try:
        for _ in range(20):  # slow heads: never finish their headers
            s = await trio.open_tcp_stream("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
            await s.send_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthori")
            streams.append(s)
        for _ in range(5):  # slow bodies: a head, then 1 byte of 100 KB
            s = await trio.open_tcp_stream("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
            await s.send_all(head(KEY, 100_000) + b"{")
            streams.append(s)
        await wait_for(lambda: slots.held_by(hash_key(KEY)) == 5)
        assert slots.in_flight == 0  # bodies still arriving hold no worker slot
        over = await chat(g, KEY)  # the same key over its cap: refused at once
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
        assert over.headers["retry-after"] == "1"
        for _ in range(10):
            r = await chat(g, OTHER)
            assert r.status_code == 200, r.text
    finally:
        for s in streams:
            await s.aclose()
    await wait_for(lambda: slots.held_by(hash_key(KEY)) == 0)
    assert (await chat(g, KEY)).status_code == 200


async def test_slow_body_gets_408_and_frees_its_key_slot(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    server = {"body_grace_s": 0.2, "body_min_rate": 100, "body_timeout_s": 5}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    s = await trio.open_tcp_stream("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
    async with s:
        await s.send_all(head(KEY, 10_000, "/v1/messages") + b'{"mo')
        reply, body = await read_responses(s, 1)
    assert reply.status_code == 408
    err = orjson.loads(body)
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    await wait_for(lambda: g.app.chat.slots.held_by(hash_key(KEY)) == 0)


async def test_overload_queues_then_sheds_in_the_callers_dialect(nursery: trio.Nursery) -> None:
    # the admitted answer must outlast the queued and shed requests' set-up on a busy box
    sim = await start_simulator(nursery, Fault(ttft_ms=4000))
    server = {"max_in_flight": 1, "queue_max": 1, "queue_timeout_s": 30}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    slots = g.app.chat.slots
    results: dict[str, Any] = {}

    async def one(name: str, path: str = "/v1/chat/completions") -> None:
        results[name] = await chat(g, KEY, path)

    async with trio.open_nursery() as clients:
        clients.start_soon(one, "admitted")
        await wait_for(lambda: slots.in_flight == 1)
        clients.start_soon(one, "queued")
        await wait_for(lambda: slots.statistics().waiting == 1)
        await one("shed", "/v1/messages")  # line full: refused at once, in its dialect
        assert "admitted" not in results  # ... while the admitted one is still running
    assert results["admitted"].status_code == 200
    assert results["queued"].status_code == 200  # got the slot when the first finished
    shed = results["shed"]
    # nothing has finished yet: no observed drain rate, so the bound (retry_after_max_s)
    assert shed.status_code == 503 and shed.headers["retry-after"] == "10"
    assert shed.json()["error"]["type"] == "overloaded_error"
    assert slots.statistics().refused_full == 1


async def test_a_full_worker_refuses_before_reading_the_body(nursery: trio.Nursery) -> None:
    """Every slot taken and no line: a new request is refused (503, Retry-After, the caller's
    dialect) once its head is in, without waiting for its body; the key was checked (its
    key slot is not held afterwards) and the refusal is counted."""
    sim = await start_simulator(nursery, Fault(ttft_ms=20_000))
    server = {"max_in_flight": 1, "queue_max": 0, "body_timeout_s": 60, "body_grace_s": 60}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    slots = g.app.chat.slots
    nursery.start_soon(chat, g, KEY)
    await wait_for(lambda: slots.in_flight == 1)
    s = await trio.open_tcp_stream("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
    async with s:
        await s.send_all(head(KEY, 10_000, "/v1/messages") + b'{"model": "r", ')  # no more
        reply, body = await read_responses(s, 1)
    assert reply.status_code == 503
    assert dict(reply.headers)[b"retry-after"] == b"10"  # nothing finished yet: the bound
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"
    assert slots.statistics().refused_full == 1
    assert slots.held_by(hash_key(KEY)) == 1  # only the running request's


async def test_a_queued_request_gives_up_at_its_deadline(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(ttft_ms=20_000))
    server = {"max_in_flight": 1, "queue_max": 8, "queue_timeout_s": 0.2}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    nursery.start_soon(chat, g, KEY)
    await wait_for(lambda: g.app.chat.slots.in_flight == 1)
    r = await chat(g, KEY)
    assert r.status_code == 503 and r.json()["error"]["code"] == "gateway_overloaded"
    assert g.app.chat.slots.statistics().refused_timeout == 1


async def test_client_closed_connections_leave_no_descriptors(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([sim.url]))
    port = int(g.url.rsplit(":", 1)[1])
    body = orjson.dumps({"model": "r", "messages": MSGS})
    assert (await chat(g, KEY)).status_code == 200  # warm: upstream pool, caches
    before = open_fds()
    for _ in range(150):  # keep-alive requests whose client then leaves
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.send_all(head(KEY, len(body)) + body)
        reply, _ = await read_responses(s, 1)
        assert reply.status_code == 200
        await s.aclose()
    assert g.httpd is not None
    await wait_for(lambda: not g.httpd.connections and open_fds() <= before + 2)


async def test_drain_deadline_ends_streams_with_an_error_event(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(tokens=2000, chunk_ms=20))  # ~40 s streams
    settings = chain_settings([sim.url])
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, shutdown_grace_s=0.5)
    )
    g = await start_gateway(nursery, settings)
    out: dict[str, bytes] = {}

    async def stream(path: str) -> None:
        body: dict[str, Any] = {"model": "r", "messages": MSGS, "stream": True}
        if path == "/v1/messages":
            body["max_tokens"] = 4000
        async with httpx.AsyncClient(timeout=30) as c:
            headers = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
            async with c.stream("POST", g.url + path, json=body, headers=headers) as r:
                out[path] = b"".join([chunk async for chunk in r.aiter_bytes()])

    async with trio.open_nursery() as clients:
        clients.start_soon(stream, "/v1/chat/completions")
        clients.start_soon(stream, "/v1/messages")
        await wait_for(lambda: sim.sim.stats.active == 2)
        g.shutdown.set()
    assert out["/v1/chat/completions"].rstrip().endswith(b'"code":"gateway_shutting_down"}}')
    assert b"event: error\n" in out["/v1/messages"]
    await wait_for(lambda: len([r for r in g.sink.records if r.kind == "request"]) == 2)
    records = [r for r in g.sink.records if r.kind == "request"]
    assert sorted(r.outcome for r in records) == ["interrupted", "interrupted"]
    assert all(r.output_tokens > 0 and r.cost_micros > 0 for r in records)


async def test_tls_termination_on_the_data_port(nursery: trio.Nursery, tmp_path: Path) -> None:
    cert, key = await self_signed_cert(tmp_path)
    sim = await start_simulator(nursery)
    server = {"tls_cert_file": str(cert), "tls_key_file": str(key)}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    url = g.url.replace("http://", "https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=ctx, timeout=30) as c:
        r = await c.post(url + "/v1/chat/completions", json={"model": "r", "messages": MSGS},
                         headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    async with httpx.AsyncClient(timeout=30) as c:  # plain HTTP on the TLS port: refused
        with pytest.raises(httpx.TransportError):
            await c.get(g.url + "/healthz")


async def test_count_tokens_goes_through_the_intake(nursery: trio.Nursery) -> None:
    """count_tokens takes the key's slot and a worker slot like every proxy endpoint: a key
    at its cap gets 429, a full worker 503, both in the Anthropic envelope."""
    sim = await start_simulator(nursery, Fault(tokens=2000, chunk_ms=20))  # ~40 s streams
    server = {"max_in_flight": 1, "queue_max": 0, "max_in_flight_per_key": 1}
    g = await start_gateway(nursery, with_other_team(chain_settings([sim.url],
                                                                    extra={"server": server})))  # fmt: skip
    body = {"model": "r", "messages": MSGS}

    async def count(key: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as c:
            return await c.post(g.url + "/v1/messages/count_tokens", json=body,
                                headers={"x-api-key": key})  # fmt: skip

    async with trio.open_nursery() as held:  # KEY's stream holds its key slot and the worker
        held.start_soon(partial(chat, g, KEY, stream=True))
        await wait_for(lambda: sim.sim.stats.active == 1)
        same_key, other_key = await count(KEY), await count(OTHER)
        held.cancel_scope.cancel()
    assert same_key.status_code == 429 and same_key.headers["retry-after"] == "1"
    assert same_key.json()["error"]["type"] == "rate_limit_error"
    # the worker's 503: nothing has finished yet, so the bound (retry_after_max_s)
    assert other_key.status_code == 503 and other_key.headers["retry-after"] == "10"
    assert other_key.json() == {"type": "error", "error": {
        "type": "overloaded_error", "message": "The gateway is at capacity; retry shortly."}}  # fmt: skip
    await wait_for(lambda: g.app.in_flight == 0)
    ok = await count(KEY)
    assert ok.status_code == 200 and ok.json()["estimated"] is True


async def test_readyz_is_503_on_both_ports_as_soon_as_the_drain_starts(
    nursery: trio.Nursery,
) -> None:
    """A load balancer must stop sending the moment a worker drains: /readyz answers 503 on
    the data port (a probe whose head was arriving) and on the admin port (which keeps
    serving until the data plane has drained), while a stream is still in flight."""
    sim = await start_simulator(nursery, Fault(tokens=2000, chunk_ms=20))  # ~40 s streams
    settings = chain_settings([sim.url])
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, shutdown_grace_s=60)
    )
    g = await start_gateway(nursery, settings)
    async with httpx.AsyncClient(timeout=30) as c:
        assert (await c.get(g.url + "/readyz")).status_code == 200
        assert (await c.get(g.admin_url + "/readyz")).status_code == 200
    port = int(g.url.rsplit(":", 1)[1])
    async with trio.open_nursery() as held:
        held.start_soon(partial(chat, g, KEY, stream=True))
        await wait_for(lambda: sim.sim.stats.active == 1)
        probe = await trio.open_tcp_stream("127.0.0.1", port)
        await probe.send_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\n")  # its head is arriving
        await wait_for(lambda: g.httpd is not None and len(g.httpd.connections) == 2)
        g.shutdown.set()
        await wait_for(lambda: g.httpd is not None and g.httpd.draining)
        await probe.send_all(b"\r\n")
        reply, body = await read_responses(probe, 1)
        assert reply.status_code == 503 and orjson.loads(body)["draining"] is True
        async with httpx.AsyncClient(timeout=30) as c:
            admin = await c.get(g.admin_url + "/readyz")
        assert admin.status_code == 503 and admin.json()["draining"] is True
        assert sim.sim.stats.active == 1  # the stream is still being served
        held.cancel_scope.cancel()
    await wait_for(lambda: g.httpd is not None and g.httpd.drained.is_set())


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"),
     ("/v1/messages", "openai")],
    ids=["openai-verbatim", "anthropic-verbatim", "anthropic-from-openai-decoded"],
)  # fmt: skip
async def test_drain_ends_a_stream_whose_upstream_stalls_after_its_final_event(
    nursery: trio.Nursery, path: str, kind: str
) -> None:
    """At the drain deadline a stream whose final event is out is left a moment to end by
    itself; when its upstream stalls instead, the caller still gets the end of a stream in
    its dialect (no error, no cut connection) and the ledger says it was served."""
    upstream = StallAfterFinal()
    port = await nursery.start(upstream.serve)
    settings = chain_settings([f"http://127.0.0.1:{port}"], kinds=[kind])
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, shutdown_grace_s=0.5)
    )
    g = await start_gateway(nursery, settings)
    body: dict[str, Any] = {"model": "r", "messages": MSGS, "stream": True, "max_tokens": 64}
    got: dict[str, Any] = {}

    async def stream() -> None:
        headers = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
        try:
            async with httpx.AsyncClient(timeout=30) as c:
                async with c.stream("POST", g.url + path, json=body, headers=headers) as r:
                    got["response"] = r
                    got["body"] = b"".join([chunk async for chunk in r.aiter_bytes()])
        except httpx.HTTPError as exc:  # a connection cut in the middle of the stream
            got["error"] = exc

    async with trio.open_nursery() as clients:
        clients.start_soon(stream)
        await upstream.stalled.wait()
        await wait_for(lambda: any(f() for f in g.app.interrupts.live.values()))  # relayed
        g.shutdown.set()
    assert "error" not in got, got["error"]
    text = got["body"].decode()
    assert got["response"].status_code == 200 and "error" not in text
    if path == "/v1/chat/completions":
        assert '"finish_reason":"stop"' in text and text.endswith("data: [DONE]\n\n")
        assert "fp_stall" in text  # relayed verbatim
    else:
        assert '"stop_reason":"end_turn"' in text and text.count("event: message_stop") == 1
        assert text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
        assert ("fp_stall" in text) is False
    await wait_for(lambda: any(r.kind == "request" for r in g.sink.records))
    (record,) = [r for r in g.sink.records if r.kind == "request"]
    assert (record.outcome, record.status, record.error_kind) == ("served", 200, None)
    assert record.output_tokens > 0 and record.cost_micros > 0
    assert record.estimated is (kind == "openai")  # Anthropic's message_delta had the usage
    if kind == "openai" and path == "/v1/messages":  # decoded: the caller reads what is billed
        delta = [e for e in text.split("\n\n") if e.startswith("event: message_delta")]
        usage = orjson.loads(delta[0].split("data: ", 1)[1])["usage"]
        assert usage["output_tokens"] == record.output_tokens, usage
    await wait_for(lambda: upstream.closed == 1)  # the stalled upstream was let go


@pytest.mark.parametrize(
    ("path", "end"),
    [("/v1/chat/completions", b"data: [DONE]\n\n"),
     ("/v1/messages", b'data: {"type":"message_stop"}\n\n')],
    ids=["openai", "anthropic"],
)  # fmt: skip
async def test_a_client_that_leaves_after_the_end_event_was_served(
    nursery: trio.Nursery, path: str, end: bytes
) -> None:
    """The OpenAI SDK closes its connection once it reads [DONE]. A verbatim stream's
    upstream may still owe its body's end then (here it never sends it): the request was
    recorded 499 client_disconnected, an error on the dashboard, for a whole answer."""
    upstream = StallAfterFinal(with_end=True)
    port = await nursery.start(upstream.serve)
    kind = "openai" if path == "/v1/chat/completions" else "anthropic"
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}"], kinds=[kind]))
    body = {"model": "r", "messages": MSGS, "stream": True, "max_tokens": 64}
    headers = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
    received = b""
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream("POST", g.url + path, json=body, headers=headers) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
                if received.endswith(end):
                    break  # leaves the block: the connection is closed, as the SDK does
    assert r.status_code == 200 and received.endswith(end)
    if kind == "openai":
        assert b"fp_stall" in received  # relayed verbatim
    await wait_for(lambda: any(r.kind == "request" for r in g.sink.records))
    (record,) = [r for r in g.sink.records if r.kind == "request"]
    assert (record.outcome, record.status, record.error_kind) == ("served", 200, None)
    assert (record.input_tokens, record.output_tokens) == (5, 3)
    await wait_for(lambda: upstream.closed == 1)  # the stalled upstream was let go


@pytest.mark.parametrize(
    ("path", "end"),
    [("/v1/chat/completions", b"data: [DONE]\n\n"),
     ("/v1/messages", b'data: {"type":"message_stop"}\n\n')],
    ids=["openai", "anthropic"],
)  # fmt: skip
async def test_a_client_that_leaves_after_a_stream_that_came_in_one_read_was_served(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, path: str, end: bytes
) -> None:
    """A short verbatim stream comes whole in the upstream's first read. It was handed to the
    client writer as bytes before the :class:`Handoff`, and the winner learned that its end
    was out only once the writer took the Handoff: a client that read the end and left before
    that (the OpenAI SDK closes at ``[DONE]``) was recorded 499 client_disconnected for a whole
    answer (1 in ~16 SDK reads of such a stream on a test box). The Handoff is held here until
    the client has left, as a busy writer may hold it; the winner now writes its first bytes
    itself, after it."""
    from trioproxy.edge import handler
    from trioproxy.upstream.items import Handoff, Item, Outbox, Raw

    class Holding:  # the runner's outbox: a Handoff after the end is held until cancelled
        def __init__(self, inner: Outbox) -> None:
            self.inner, self.end_out = inner, False

        async def send(self, item: Item) -> None:
            if isinstance(item, Raw) and item.data.endswith(end):
                self.end_out = True
            elif isinstance(item, Handoff) and self.end_out:
                await trio.sleep_forever()  # the client's leaving cancels the request
            await self.inner.send(item)

    real = handler.AttemptRunner

    def runner(transport: Any, req: Any, statuses: Any, out: Outbox, rid: str) -> Any:
        return real(transport, req, statuses, Holding(out), rid)

    monkeypatch.setattr(handler, "AttemptRunner", runner)
    upstream = OneWrite(body=b"".join(STALL_EVENTS[path] + END_EVENTS[path]))
    port = await nursery.start(upstream.serve)
    kind = "openai" if path == "/v1/chat/completions" else "anthropic"
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}"], kinds=[kind]))
    body = {"model": "r", "messages": MSGS, "stream": True, "max_tokens": 64}
    headers = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
    received = b""
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream("POST", g.url + path, json=body, headers=headers) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
                if received.endswith(end):
                    break  # leaves the block: the connection is closed, as the SDK does
    assert r.status_code == 200 and received.endswith(end)
    await wait_for(lambda: any(r.kind == "request" for r in g.sink.records))
    (record,) = [r for r in g.sink.records if r.kind == "request"]
    assert (record.outcome, record.status, record.error_kind) == ("served", 200, None)
    assert (record.input_tokens, record.output_tokens) == (5, 3)


@pytest.mark.parametrize("tool", [False, True], ids=["text", "tool-call"])
async def test_a_non_stream_answer_without_usage_bills_the_prompts_estimate(
    nursery: trio.Nursery, tool: bool
) -> None:
    """An OpenAI-wire answer with no usage was billed 0 input tokens (the adapter's estimate
    of the text alone, taken as the provider's), and a tool call nothing at all."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    message = (
        {"role": "assistant", "content": None, "tool_calls": [call]} if tool
        else {"role": "assistant", "content": "It is sunny in Paris today."}
    )  # fmt: skip
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if tool else "stop"}]}  # fmt: skip
    upstream = FixedAnswer(orjson.dumps(body))
    port = await nursery.start(upstream.serve)
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}"]))
    prompt = [{"role": "user", "content": "what is the weather in Paris " * 50}]
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + "/v1/chat/completions", json={"model": "r", "messages": prompt},
                         headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
    assert r.status_code == 200, r.text
    await wait_for(lambda: any(r.kind == "request" for r in g.sink.records))
    (record,) = [r for r in g.sink.records if r.kind == "request"]
    assert record.estimated and record.input_tokens > 300  # the prompt's estimate
    assert record.output_tokens > 0 and record.cost_micros > 0


def test_the_finish_grace_ends_within_the_servers_flush_window() -> None:
    """A finishing stream's grace runs inside the time the server gives interrupted
    connections to write their last bytes, or its end would be cut after all."""
    assert FINISH_GRACE_S < INTERRUPT_FLUSH_S


async def test_a_client_that_stops_reading_is_dropped_and_its_upstream_cancelled(
    nursery: trio.Nursery,
) -> None:
    """A stream whose client takes no more bytes would hold its slots, its relay and its
    upstream for ever: after send_timeout_s without progress the connection is dropped
    and the request ends as a client disconnect."""
    sim = await start_simulator(nursery, Fault(tokens=200_000))  # megabytes, as fast as taken
    server = {"send_timeout_s": 0.5}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", int(g.url.rsplit(":", 1)[1])))
    client = trio.SocketStream(sock)
    body = orjson.dumps({"model": "r", "messages": MSGS, "stream": True})
    async with client:
        await client.send_all(head(KEY, len(body)) + body)  # then never reads
        await wait_for(lambda: g.app.in_flight == 1 and sim.sim.stats.active == 1)
        await wait_for(lambda: g.app.in_flight == 0 and sim.sim.stats.active == 0)
    await wait_for(lambda: any(r.kind == "request" for r in g.sink.records))
    (record,) = [r for r in g.sink.records if r.kind == "request"]
    assert (record.status, record.error_kind) == (499, "client_disconnected")
    assert g.app.chat.slots.held_by(hash_key(KEY)) == 0


async def test_drain_deadline_answers_a_request_whose_body_is_still_arriving(
    nursery: trio.Nursery,
) -> None:
    """An upload still in progress at the drain deadline gets 503 gateway_shutting_down (and
    Retry-After) in its endpoint's dialect instead of a connection cut without an answer."""
    sim = await start_simulator(nursery)
    server = {"shutdown_grace_s": 0.3, "body_grace_s": 60, "body_timeout_s": 60}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    s = await trio.open_tcp_stream("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
    async with s:
        await s.send_all(head(KEY, 10_000, "/v1/messages") + b'{"model": "r", ')
        await wait_for(lambda: g.app.chat.slots.held_by(hash_key(KEY)) == 1)
        g.shutdown.set()
        reply, body = await read_responses(s, 1)
    assert reply.status_code == 503 and dict(reply.headers)[b"retry-after"] == b"1"
    assert dict(reply.headers)[b"connection"] == b"close"
    err = orjson.loads(body)
    assert err["type"] == "error" and err["error"]["message"].startswith("The gateway is shutting")
    await wait_for(lambda: g.httpd is not None and g.httpd.drained.is_set())


async def test_a_non_stream_client_that_leaves_cancels_its_upstream_at_once(
    nursery: trio.Nursery,
) -> None:
    """A non-stream request whose client closes the connection while the upstream is still
    working: the upstream call is cancelled (the server's disconnect hook cancels the race:
    no watcher task), the request is recorded as a client disconnect, its slots are freed."""
    sim = await start_simulator(nursery, Fault(ttft_ms=30_000))  # the answer would take 30 s
    g = await start_gateway(nursery, chain_settings([sim.url]))
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", int(g.url.rsplit(":", 1)[1])))
    client = trio.SocketStream(sock)
    body = orjson.dumps({"model": "r", "messages": MSGS})
    async with client:
        await client.send_all(head(KEY, len(body)) + body)
        await wait_for(lambda: sim.sim.stats.active == 1)
    await wait_for(lambda: sim.sim.stats.active == 0 and g.app.in_flight == 0)
    await wait_for(lambda: any(r.kind == "request" for r in g.sink.records))
    (record,) = [r for r in g.sink.records if r.kind == "request"]
    assert (record.status, record.error_kind) == (499, "client_disconnected")
    assert g.app.chat.slots.held_by(hash_key(KEY)) == 0


async def test_probes_and_metrics_answers_name_a_request_id(nursery: trio.Nursery) -> None:
    """Every answer names its request, the probes' and /metrics' too (a load balancer's
    failing probe can be found in the logs by the id it was given)."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([sim.url]))
    async with httpx.AsyncClient(timeout=30) as c:
        answers = [
            await c.get(g.url + "/healthz"),
            await c.get(g.url + "/readyz"),
            await c.get(g.admin_url + "/healthz"),
            await c.get(g.admin_url + "/readyz"),
            await c.get(g.admin_url + "/metrics"),  # no admin key: refused, still named
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 401]
    ids = [r.headers.get("x-request-id", "") for r in answers]
    assert all(len(i) >= 16 for i in ids) and len(set(ids)) == len(ids), ids
