"""The provider simulator over real sockets: wire formats, usage, faults, stats."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

from trioproxy.core.tokens import estimate_tokens, prompt_tokens, split_tokens
from trioproxy.simulator import Fault, FaultError, Simulator
from trioproxy.simulator.http11 import MAX_BODY_BYTES
from trioproxy.simulator.stats import RequestTrace

OPENAI_KEY = {"authorization": "Bearer sk-test"}
ANTHROPIC_KEY = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about trio nurseries, please."},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@dataclass
class Sim:
    sim: Simulator
    client: httpx.AsyncClient


@pytest.fixture
async def sim(nursery: trio.Nursery) -> AsyncIterator[Sim]:
    simulator = Simulator()
    port = await nursery.start(simulator.serve)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Sim(simulator, client)


def openai_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": MESSAGES, **extra}


def anthropic_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-3-5-haiku-latest",
        "system": "You are terse.",
        "messages": [MESSAGES[1]],
        "max_tokens": 100,
        **extra,
    }


ANTHROPIC_INPUT = prompt_tokens([{"content": "You are terse."}, MESSAGES[1]])


async def sse(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body."""
    events: list[tuple[str | None, str]] = []
    event: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, line[6:]))
            event = None
    return events


async def wait_done(sim: Simulator, sim_id: str) -> RequestTrace:
    with trio.fail_after(2):
        return await sim.stats.wait_done(sim_id)


# --- OpenAI -----------------------------------------------------------------


async def test_openai_completion_exact_usage(sim: Sim) -> None:
    r = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_KEY)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    assert estimate_tokens(text) == 30
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens(MESSAGES),
        "completion_tokens": 30,
        "total_tokens": prompt_tokens(MESSAGES) + 30,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert sim.sim.stats.input_tokens == prompt_tokens(MESSAGES)
    assert sim.sim.stats.output_tokens == 30


async def test_openai_n_answers_n_choices_billed_each(sim: Sim) -> None:
    r = await sim.client.post("/v1/chat/completions", json=openai_body(n=3), headers=OPENAI_KEY)
    assert r.status_code == 200
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) == 1
    assert body["usage"]["completion_tokens"] == 3 * 30
    assert sim.sim.stats.output_tokens == 3 * 30
    for bad in ({"n": 0}, {"n": 129}, {"n": 2, "stream": True}):
        r = await sim.client.post("/v1/chat/completions", json=openai_body(**bad),
                                  headers=OPENAI_KEY)  # fmt: skip
        assert r.status_code == 400, bad


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_openai_max_tokens_truncates(sim: Sim, field: str) -> None:
    full = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_KEY)
    r = await sim.client.post(
        "/v1/chat/completions", json=openai_body(**{field: 7}), headers=OPENAI_KEY
    )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 7
    assert estimate_tokens(choice["message"]["content"]) == 7
    assert full.json()["choices"][0]["message"]["content"].startswith(choice["message"]["content"])


async def test_openai_answer_is_deterministic_and_sized_by_header(sim: Sim) -> None:
    async def text(content: str, tokens: int) -> str:
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        headers = {**OPENAI_KEY, "x-sim-tokens": str(tokens)}
        r = await sim.client.post("/v1/chat/completions", json=body, headers=headers)
        return str(r.json()["choices"][0]["message"]["content"])

    assert await text("alpha", 12) == await text("alpha", 12)
    assert await text("alpha", 12) != await text("beta", 12)
    assert estimate_tokens(await text("alpha", 55)) == 55


async def test_openai_stream_with_usage(sim: Sim) -> None:
    body = openai_body(stream=True, stream_options={"include_usage": True})
    async with sim.client.stream(
        "POST", "/v1/chat/completions", json=body, headers=OPENAI_KEY
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = await sse(r)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(content) == 30
    assert all(estimate_tokens(piece) == 1 for piece in content)
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 30
    assert chunks[-1]["usage"]["prompt_tokens"] == prompt_tokens(MESSAGES)
    assert all(c["usage"] is None for c in chunks[:-1])
    # the same prompt non-streamed gives the same text
    r2 = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_KEY)
    assert "".join(content) == r2.json()["choices"][0]["message"]["content"]
    assert split_tokens("".join(content)) == content


async def test_openai_stream_without_usage_has_no_usage_chunk(sim: Sim) -> None:
    async with sim.client.stream(
        "POST", "/v1/chat/completions", json=openai_body(stream=True, max_tokens=4),
        headers=OPENAI_KEY,
    ) as r:  # fmt: skip
        events = await sse(r)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert len(chunks) == 1 + 4 + 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks)
    assert sim.sim.stats.output_tokens == 4


async def test_openai_tool_call(sim: Sim) -> None:
    messages = [{"role": "user", "content": "What is the weather in my town?"}]
    body = {"model": "m", "messages": messages, "tools": [WEATHER_TOOL]}
    r = await sim.client.post("/v1/chat/completions", json=body, headers=OPENAI_KEY)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = call["function"]["arguments"]
    assert list(json.loads(args)) == ["city"]
    expected = estimate_tokens("get_weather") + estimate_tokens(args)
    assert r.json()["usage"]["completion_tokens"] == expected

    async with sim.client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=OPENAI_KEY
    ) as r:
        chunks = [json.loads(d) for _, d in (await sse(r))[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    streamed = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:-1])
    assert streamed == args
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # a tool result as the last message gets a text answer
    follow = [*messages, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    r = await sim.client.post(
        "/v1/chat/completions", json={**body, "messages": follow}, headers=OPENAI_KEY
    )
    assert r.json()["choices"][0]["finish_reason"] == "stop"


# --- Anthropic ---------------------------------------------------------------


def anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, object]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
    }


async def test_anthropic_message_exact_usage(sim: Sim) -> None:
    r = await sim.client.post("/v1/messages", json=anthropic_body(), headers=ANTHROPIC_KEY)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("msg_")
    assert (body["type"], body["role"], body["model"]) == (
        "message", "assistant", "claude-3-5-haiku-latest",
    )  # fmt: skip
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    assert estimate_tokens(body["content"][0]["text"]) == 30
    assert body["usage"] == anthropic_usage(ANTHROPIC_INPUT, 30)

    r = await sim.client.post(
        "/v1/messages", json=anthropic_body(max_tokens=3), headers=ANTHROPIC_KEY
    )
    assert r.json()["stop_reason"] == "max_tokens"
    assert r.json()["usage"]["output_tokens"] == 3


async def test_anthropic_stream_event_sequence(sim: Sim) -> None:
    async with sim.client.stream(
        "POST", "/v1/messages", json=anthropic_body(stream=True, max_tokens=9),
        headers=ANTHROPIC_KEY,
    ) as r:  # fmt: skip
        assert r.headers["content-type"].startswith("text/event-stream")
        events = await sse(r)
    kinds = [e for e, _ in events]
    assert kinds == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 9,
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == k for d, k in zip(data, kinds, strict=True))
    assert data[0]["message"]["usage"] == anthropic_usage(ANTHROPIC_INPUT, 1)
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for d in data[3:12])
    assert estimate_tokens(text) == 9
    assert data[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": 9}
    assert sim.sim.stats.output_tokens == 9


async def test_anthropic_tool_use(sim: Sim) -> None:
    tool = {"name": "get_weather", "input_schema": {"properties": {"where": {}}}}
    body = anthropic_body(
        messages=[{"role": "user", "content": "weather?"}], tools=[tool], stream=True
    )
    async with sim.client.stream("POST", "/v1/messages", json=body, headers=ANTHROPIC_KEY) as r:
        data = [json.loads(d) for _, d in await sse(r)]
    assert data[1]["content_block"]["type"] == "tool_use"
    partial = "".join(
        d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta"
    )
    assert list(json.loads(partial)) == ["where"]
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_requires_max_tokens_and_version(sim: Sim) -> None:
    body = anthropic_body()
    del body["max_tokens"]
    r = await sim.client.post("/v1/messages", json=body, headers=ANTHROPIC_KEY)
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    r = await sim.client.post(
        "/v1/messages", json=anthropic_body(), headers={"x-api-key": "sk-ant-test"}
    )
    assert r.status_code == 400


# --- auth, validation, control endpoints -------------------------------------


async def test_auth_in_each_envelope(nursery: trio.Nursery) -> None:
    simulator = Simulator(api_key="sk-right")
    port = await nursery.start(simulator.serve)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        r = await client.post("/v1/chat/completions", json=openai_body())
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = await client.post(
            "/v1/chat/completions", json=openai_body(), headers={"authorization": "Bearer no"}
        )
        assert r.status_code == 401
        r = await client.post(
            "/v1/messages", json=anthropic_body(), headers={**ANTHROPIC_KEY, "x-api-key": "no"}
        )
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        r = await client.post(
            "/v1/messages",
            json=anthropic_body(),
            headers={**ANTHROPIC_KEY, "x-api-key": "sk-right"},
        )
        assert r.status_code == 200
    assert simulator.stats.by_status == {401: 3, 200: 1}


async def test_bad_requests(sim: Sim) -> None:
    post = sim.client.post
    r = await post("/v1/chat/completions", content=b"{not json", headers=OPENAI_KEY)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await post("/v1/chat/completions", json={"model": "m", "messages": []}, headers=OPENAI_KEY)
    assert r.status_code == 400
    r = await post(
        "/v1/chat/completions", json=openai_body(), headers={**OPENAI_KEY, "x-sim-fault": "nope=1"}
    )
    assert r.status_code == 400
    assert "nope" in r.json()["error"]["message"]
    r = await post("/v1/nothing", json={}, headers=OPENAI_KEY)
    assert r.status_code == 404
    r = await post("/v1/chat/completions", content=b"x" * (MAX_BODY_BYTES + 1), headers=OPENAI_KEY)
    assert r.status_code == 413
    assert sim.sim.stats.input_tokens == 0


async def test_models_stats_reset_and_keep_alive(sim: Sim) -> None:
    r = await sim.client.get("/v1/models", headers=OPENAI_KEY)
    assert r.json()["object"] == "list"
    assert {m["object"] for m in r.json()["data"]} == {"model"}
    r = await sim.client.get("/v1/models", headers=ANTHROPIC_KEY)
    assert r.json()["has_more"] is False
    for _ in range(3):
        await sim.client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_KEY)
    stats = (await sim.client.get("/_sim/stats")).json()
    assert stats["connections"] == 1  # every request reused one kept-alive connection
    assert stats["by_path"]["/v1/chat/completions"] == 3
    assert stats["output_tokens"] == 90
    assert stats["by_status"] == {"200": 5}
    await sim.client.post("/_sim/reset")
    assert sim.sim.stats.output_tokens == 0
    assert sim.sim.stats.requests == 0


# --- faults -------------------------------------------------------------------


def test_fault_parse_and_merge() -> None:
    f = Fault.parse("ttft_ms=20; status=429;retry_after=2.5;hang")
    assert (f.ttft_ms, f.status, f.retry_after, f.hang) == (20.0, 429, 2.5, True)
    assert f.over(Fault(status=500, tokens=3)) == Fault(
        ttft_ms=20.0, status=429, retry_after=2.5, hang=True, tokens=3
    )
    assert Fault.from_mapping({"hang": False, "tokens": 4}) == Fault(hang=False, tokens=4)
    for bad in ("status=200", "tokens=-1", "reset_after=x", "color=red"):
        with pytest.raises(FaultError):
            Fault.parse(bad)
    assert Fault(fail_first=2).error_status(2) == 500
    assert Fault(fail_first=2, status=503).error_status(3) is None


@pytest.mark.parametrize(
    ("path", "status", "spec", "retry_after", "error_type"),
    [
        ("/v1/chat/completions", 429, "status=429;retry_after=7", "7", "requests"),
        ("/v1/chat/completions", 503, "status=503", None, "server_error"),
        ("/v1/messages", 529, "status=529", "1", "overloaded_error"),
        ("/v1/messages", 429, "status=429;retry_after=0.5", "0.5", "rate_limit_error"),
        ("/v1/messages", 500, "status=500", None, "api_error"),
    ],
)
async def test_status_faults(
    sim: Sim, path: str, status: int, spec: str, retry_after: str | None, error_type: str
) -> None:
    anthropic = path == "/v1/messages"
    body = anthropic_body() if anthropic else openai_body()
    headers = {**(ANTHROPIC_KEY if anthropic else OPENAI_KEY), "x-sim-fault": spec}
    r = await sim.client.post(path, json=body, headers=headers)
    assert r.status_code == status
    assert r.headers.get("retry-after") == retry_after
    error = r.json()["error"]
    assert error["type"] == error_type
    if anthropic:
        assert r.json()["type"] == "error"
    assert sim.sim.stats.input_tokens == 0


async def test_fail_first_then_succeed(sim: Sim) -> None:
    r = await sim.client.post("/_sim/faults", json={"fail_first": 2, "status": 503})
    assert r.json() == {"fault": {"fail_first": 2, "status": 503}}
    codes = []
    for _ in range(4):
        r = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_KEY)
        codes.append(r.status_code)
    assert codes == [503, 503, 200, 200]
    await sim.client.post("/_sim/faults", content=b"")
    assert sim.sim.default_fault == Fault()


async def test_ttft_delays_first_byte(sim: Sim) -> None:
    headers = {**OPENAI_KEY, "x-sim-fault": "ttft_ms=150", "x-sim-id": "slow"}
    start = trio.current_time()
    r = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=headers)
    assert r.headers["x-sim-id"] == "slow"
    trace = sim.sim.stats.trace("slow")
    assert trace is not None
    assert trace.first_byte_at is not None
    assert trace.first_byte_at - trace.arrived_at >= 0.15
    assert trio.current_time() - start >= 0.15
    assert trace.outcome == "complete"
    assert (trace.status, trace.output_tokens) == (200, 30)
    over_http = (await sim.client.get("/_sim/stats")).json()["traces"]["slow"]
    assert over_http["first_byte_at"] == trace.first_byte_at
    assert over_http["closed_at"] is None


async def test_hang_until_client_times_out(sim: Sim) -> None:
    headers = {**OPENAI_KEY, "x-sim-fault": "hang", "x-sim-id": "hung"}
    # connect may be slow on a busy box: only the read is short
    with pytest.raises(httpx.ReadTimeout):
        await sim.client.post(
            "/v1/chat/completions", json=openai_body(), headers=headers,
            timeout=httpx.Timeout(10.0, read=0.3),
        )  # fmt: skip
    gave_up = trio.current_time()
    trace = await wait_done(sim.sim, "hung")
    assert trace.closed_at is not None
    # the hang never ends by itself: the simulator closed because the client left (on a busy
    # box its task may wait a scheduler turn or two, so the bound is loose)
    assert trace.closed_at - gave_up < 2.0
    assert trace.first_byte_at is None
    assert trace.status is None
    assert sim.sim.stats.input_tokens == 0


async def test_reset_mid_stream_counts_delivered_tokens(sim: Sim) -> None:
    headers = {**OPENAI_KEY, "x-sim-fault": "reset_after=5;chunk_ms=5", "x-sim-id": "rst"}
    received: list[str] = []
    with pytest.raises(httpx.ReadError):  # an RST, not a clean FIN
        async with sim.client.stream(
            "POST", "/v1/chat/completions", json=openai_body(stream=True), headers=headers
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if "content" in delta and "role" not in delta:
                        received.append(delta["content"])
    assert len(received) == 5
    assert sim.sim.stats.output_tokens == estimate_tokens("".join(received)) == 5
    assert sim.sim.stats.input_tokens == prompt_tokens(MESSAGES)
    trace = sim.sim.stats.trace("rst")
    assert trace is not None
    assert (trace.outcome, trace.output_tokens) == ("reset", 5)


async def test_client_disconnect_is_noticed_before_the_next_chunk(sim: Sim) -> None:
    headers = {**ANTHROPIC_KEY, "x-sim-fault": "chunk_ms=2000", "x-sim-id": "gone"}
    async with sim.client.stream(
        "POST", "/v1/messages", json=anthropic_body(stream=True), headers=headers
    ) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and "content_block_delta" in line:
                break  # one token in; the next one is 2 s away
    closed = trio.current_time()
    trace = await wait_done(sim.sim, "gone")
    assert trace.closed_at is not None
    # the next chunk is 2 s away: noticed well before it, not when a write fails (a wall
    # bound of 100 ms failed under a busy box's scheduling, not the simulator's)
    assert trace.closed_at - closed < 1.0
    assert trace.outcome == "client_closed"
    assert trace.output_tokens == 1
    assert sim.sim.stats.active == 0


async def test_drip_sends_byte_by_byte(sim: Sim) -> None:
    headers = {**OPENAI_KEY, "x-sim-fault": "drip_ms=1", "x-sim-tokens": "2"}
    start = trio.current_time()
    r = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=headers)
    elapsed = trio.current_time() - start
    assert r.json()["usage"]["completion_tokens"] == 2
    assert elapsed >= (len(r.content) - 1) * 0.001


async def test_reset_before_a_whole_body(sim: Sim) -> None:
    headers = {**OPENAI_KEY, "x-sim-fault": "reset_after=0", "x-sim-id": "rst0"}
    with pytest.raises(httpx.TransportError):
        await sim.client.post("/v1/chat/completions", json=openai_body(), headers=headers)
    trace = await wait_done(sim.sim, "rst0")
    assert (trace.outcome, trace.status, trace.output_tokens) == ("reset", 200, 0)
    assert sim.sim.stats.input_tokens == prompt_tokens(MESSAGES)
    # the next request opens a fresh connection and succeeds
    r = await sim.client.post("/v1/chat/completions", json=openai_body(), headers=OPENAI_KEY)
    assert r.status_code == 200
    assert sim.sim.stats.connections == 2


async def test_many_concurrent_streams_are_independent(sim: Sim) -> None:
    async def one(i: int) -> None:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": f"#{i}"}]}
        headers = {**OPENAI_KEY, "x-sim-fault": "chunk_ms=2", "x-sim-tokens": str(10 + i)}
        async with sim.client.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as r:
            events = await sse(r)
        assert len(events) == 1 + (10 + i) + 1 + 1

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert sim.sim.stats.output_tokens == sum(10 + i for i in range(50))
    assert sim.sim.stats.internal_errors == 0
