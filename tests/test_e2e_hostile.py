"""Hostile request bodies through the real gateway: every crash class of issue 10.

Each shape once ended in the server's bare 500 (some after the budget
reservation). Now each is a 400 in the caller's dialect envelope, refused before
admission: no usage record, nothing reserved. And an unexpected exception on
the request path is a 500 in the caller's envelope naming the request id,
logged once with its traceback.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.budget.periods import period_at
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import ProviderConfig, Settings
from trioproxy.dialects._fields import MAX_DEPTH
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.sinks import ListSink
from trioproxy.providers.base import UpstreamRequest
from trioproxy.upstream.transport import HttpTransport, UpstreamResponse

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]


def settings(sim_url: str, **model: Any) -> Settings:
    provider = {"base_url": sim_url, "api_key_env": "K"}
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0, **model}
    return parse_settings(
        {
            "storage": {"state_dir": tempfile.mkdtemp(prefix="tp-")},
            "providers": {
                "p-oa": {"kind": "openai", **provider},
                "p-an": {"kind": "anthropic", **provider},
            },
            "models": {
                "m-oa": {"provider": "p-oa", **price},
                "m-an": {"provider": "p-an", **price},
            },
            "routes": {
                "oa": {"chains": {"default": [{"model": "m-oa"}]}},
                "an": {"chains": {"default": [{"model": "m-an"}]}},
            },
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
            "budgets": {"teams": {"t1": {"daily_usd": 1.0}}},
        },
        env={"K": "x"},
    )


def nest(depth: int) -> Any:
    """A JSON value that is ``depth`` containers deep."""
    value: Any = []
    for i in range(depth - 1):
        value = [value] if i % 2 else {"x": value}
    return value


def oa(route: str, **extra: Any) -> dict[str, Any]:
    return {"model": route, "messages": HI, "max_tokens": 5, **extra}


def oa_msg(route: str, message: dict[str, Any]) -> dict[str, Any]:
    return oa(route, messages=[*HI, message, {"role": "user", "content": "and?"}])


def an(route: str, **extra: Any) -> dict[str, Any]:
    return {"model": route, "messages": HI, "max_tokens": 5, **extra}


def an_user(route: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return an(route, messages=[{"role": "user", "content": list(blocks)}])


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
# (name, path, body, param) -- every class from issue 10, on the route it crashed on.
CASES: list[tuple[str, str, Any, str | None]] = [
    ("role-list", OPENAI, oa("oa", messages=[{"role": ["user"], "content": "x"}]),
     "messages[0].role"),
    ("role-object", OPENAI, oa("an", messages=[{"role": {"a": 1}, "content": "x"}]),
     "messages[0].role"),
    ("tool_calls-string", OPENAI, oa_msg("an", {"role": "assistant", "tool_calls": "x"}),
     "messages[1].tool_calls"),
    ("tool_calls-number", OPENAI, oa_msg("an", {"role": "assistant", "tool_calls": 7}),
     "messages[1].tool_calls"),
    ("tool_calls-non-objects", OPENAI, oa_msg("an", {"role": "assistant", "tool_calls": [1, "a"]}),
     "messages[1].tool_calls[0]"),
    ("tool_calls-function-string", OPENAI,
     oa_msg("an", {"role": "assistant", "tool_calls": [{**CALL, "function": "f"}]}),
     "messages[1].tool_calls[0].function"),
    ("tool_calls-arguments-object", OPENAI,
     oa_msg("an", {"role": "assistant",
                   "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}),
     "messages[1].tool_calls[0].function.arguments"),
    ("stop-number", OPENAI, oa("an", stop=5), "stop"),
    ("stop-boolean", OPENAI, oa("an", stop=True), "stop"),
    ("stop-five-strings", OPENAI, oa("oa", stop=list("abcde")), "stop"),
    ("image_url-string", OPENAI,
     oa("an", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]),
     "messages[0].content[0].image_url"),
    ("image_url-url-number", OPENAI,
     oa("an", messages=[{"role": "user",
                         "content": [{"type": "image_url", "image_url": {"url": 5}}]}]),
     "messages[0].content[0].image_url.url"),
    ("text-part-number", OPENAI,
     oa("an", messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text"),
    ("nesting-300-oa", OPENAI, oa("oa", extra=nest(300)), None),
    ("nesting-300-an", OPENAI, oa("an", extra=nest(300)), None),
    ("nesting-1000", OPENAI, oa("oa", extra=nest(1000)), None),
    ("n-1000", OPENAI, oa("oa", n=1000), "n"),
    ("tool_choice-number", OPENAI, oa("oa", tool_choice=3), "tool_choice"),
    ("tool_choice-bad-object", OPENAI, oa("oa", tool_choice={"type": "x"}), "tool_choice"),
    ("tools-type-unknown", OPENAI,
     oa("oa", tools=[{"type": "retrieval", "function": {"name": "f"}}]), "tools[0].type"),
    ("max_tokens-huge", OPENAI, oa("oa", max_tokens=2**40), "max_tokens"),
    ("an-nesting-300", ANTHROPIC, an("an", extra=nest(300)), None),
    ("an-image-media-type-number", ANTHROPIC,
     an_user("oa", {"type": "image", "source": {"type": "base64", "media_type": 1, "data": "x"}}),
     "messages[0].content[0].source"),
    ("an-tool_use-input-string", ANTHROPIC,
     an("oa", messages=[*HI, {"role": "assistant", "content": [
         {"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]),
     "messages[1].content[0].input"),
    ("an-tool_result-content-number", ANTHROPIC,
     an_user("oa", {"type": "tool_result", "tool_use_id": "t", "content": 5}),
     "messages[0].content[0].content"),
    ("an-tools-server-type", ANTHROPIC,
     an("an", tools=[{"type": "web_search_20250305", "name": "w", "input_schema": {}}]),
     "tools[0].type"),
    ("an-tool_choice-string", ANTHROPIC, an("an", tool_choice="auto"), "tool_choice"),
    ("an-thinking-bad", ANTHROPIC, an("an", thinking={"type": "enabled"}),
     "thinking.budget_tokens"),
]  # fmt: skip


def envelope(path: str, r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    if path == OPENAI:
        err = body["error"]
        assert err["message"] and err["type"] and err["code"]
        return dict(err)
    assert body["type"] == "error" and body["error"]["message"] and body["error"]["type"]
    return dict(body["error"])


async def post(g: Running, path: str, body: Any) -> httpx.Response:
    import json
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # the stdlib writes what orjson refuses (too deep)
    try:
        raw = json.dumps(body).encode()
    finally:
        sys.setrecursionlimit(old)
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.post(g.url + path, content=raw, headers={"authorization": f"Bearer {KEY}"})


@pytest.fixture
async def hostile(nursery: trio.Nursery) -> AsyncIterator[Running]:
    sim = await start_simulator(nursery)
    running = await start_gateway(nursery, settings(sim.url))
    running.sims.append(sim)
    yield running


async def team_day_usage(g: Running) -> int:
    gate = g.app.admission.gate  # type: ignore[union-attr]
    now = gate.clock()
    period = period_at("day", now, gate._tz)
    return await gate.store.usage(f"team:t1:day:{period.name}", now=now)


async def test_every_crash_class_is_a_400_in_the_dialect_before_admission(
    hostile: Running,
) -> None:
    failures = []
    for name, path, body, param in CASES:
        r = await post(hostile, path, body)
        if r.status_code != 400:
            failures.append((name, r.status_code, r.text[:200]))
            continue
        err = envelope(path, r)
        if path == OPENAI and param is not None and err["param"] != param:
            failures.append((name, "param", err["param"]))
    assert not failures, failures
    assert hostile.sink.records == []  # refused before admission: nothing recorded
    assert await team_day_usage(hostile) == 0  # and nothing reserved


@pytest.mark.parametrize(("path", "route"), [(OPENAI, "oa"), (OPENAI, "an"), (ANTHROPIC, "oa"),
                                             (ANTHROPIC, "an")])  # fmt: skip
async def test_nesting_at_the_bound_is_served_on_both_wires(
    hostile: Running, path: str, route: str
) -> None:
    """The deepest body accepted goes through cache keys and both wires' serialisers."""
    # body(1) > tools(2) > [0](3) > function(4) > parameters(5) ... : MAX_DEPTH in all
    deep = {"type": "object", "properties": {"q": nest(MAX_DEPTH - 6)}}
    if path == OPENAI:
        tool = {"type": "function", "function": {"name": "f", "parameters": deep}}
        body = oa(route, tools=[tool])
    else:
        body = an(route, tools=[{"name": "f", "input_schema": {"a": deep}}])
    r = await post(hostile, path, body)
    assert r.status_code == 200, r.text
    too_deep = {**body, "tools": [{**body["tools"][0], "extra": nest(MAX_DEPTH)}]}
    assert (await post(hostile, path, too_deep)).status_code == 400


class FaultyTransport:
    """The real transport, but a request whose body carries a marker fails inside the
    gateway: ``BOOM-OPEN`` before the answer's head, ``BOOM-STREAM`` after its first chunk."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner

    def open(
        self, provider: ProviderConfig, request: UpstreamRequest, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._open(provider, request, connect_timeout)

    @asynccontextmanager
    async def _open(
        self, provider: ProviderConfig, request: UpstreamRequest, connect_timeout: float
    ) -> AsyncIterator[UpstreamResponse]:
        if b"BOOM-OPEN" in request.body:
            raise RuntimeError("injected fault before the head")
        async with self.inner.open(provider, request, connect_timeout=connect_timeout) as resp:
            yield _Breaking(resp) if b"BOOM-STREAM" in request.body else resp

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Breaking:
    def __init__(self, inner: UpstreamResponse) -> None:
        self.inner = inner
        self.status = inner.status
        self.headers = inner.headers
        self.received = 0

    async def receive(self) -> bytes:
        if self.received:
            raise RuntimeError("injected fault mid-stream")
        self.received += 1
        return await self.inner.receive()

    async def read(self, limit: int) -> bytes:
        raise RuntimeError("injected fault reading the body")


@pytest.fixture
async def faulty(nursery: trio.Nursery) -> AsyncIterator[Running]:
    sim = await start_simulator(nursery)
    s = settings(sim.url)
    running = await start_gateway(nursery, s, transport=FaultyTransport(HttpTransport(s.providers)))
    running.sims.append(sim)
    yield running


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_unexpected_exception_is_a_500_in_the_envelope_logged_once(
    faulty: Running, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    body = (oa if path == OPENAI else an)("oa", messages=[{"role": "user", "content": "BOOM-OPEN"}])
    r = await post(faulty, path, body)
    assert r.status_code == 500
    err = envelope(path, r)
    rid = r.headers["x-request-id"]
    assert err["request_id"] == rid and rid in err["message"]
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    # the reservation was settled to what the ledger bills (an attempt that may have
    # reached the provider is billed its prompt), not left at the worst case
    with trio.fail_after(10):
        while not [x for x in faulty.sink.records if x.request_id == rid and x.kind == "request"]:
            await trio.sleep(0.02)
    billed = sum(x.cost_micros for x in faulty.sink.records if x.kind == "request")
    assert await team_day_usage(faulty) == billed
    ok = await post(faulty, path, (oa if path == OPENAI else an)("oa"))
    assert ok.status_code == 200


async def test_unexpected_exception_mid_stream_is_an_error_event(
    faulty: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    body = oa("oa", messages=[{"role": "user", "content": "BOOM-STREAM"}], stream=True)
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(faulty.url + OPENAI, json=body, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200  # the head was out: the stream ends with an error event
    rid = r.headers["x-request-id"]
    assert b'"code":"internal_error"' in r.content and rid.encode() in r.content
    assert b"[DONE]" not in r.content
    assert len([rec for rec in caplog.records if rid in rec.getMessage()]) == 1
    assert (await post(faulty, OPENAI, oa("oa"))).status_code == 200


class RefusalBreakingSink(ListSink):
    """Fails while recording a refused request: a bug outside the race."""

    def submit(self, record: UsageRecord) -> None:
        if record.status == 429:
            raise RuntimeError("injected fault in the usage sink")
        super().submit(record)


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_a_max_tokens_beyond_the_models_cap_reserves_the_cap(
    nursery: trio.Nursery, path: str
) -> None:
    """2**31 - 1 tokens asked of a model capped at 4,096 ($2 per Mtok out): the reservation is
    the cap's $0.008, well within the $1 budget (it was $4,295: refused as over budget)."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, settings(sim.url))
    r = await post(g, path, (oa if path == OPENAI else an)("oa", max_tokens=2**31 - 1))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_last_resort_outside_the_race_is_a_500_in_the_envelope(
    nursery: trio.Nursery, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    sim = await start_simulator(nursery)
    # answers of up to 10**6 tokens ($2 at most): a request for them is over the $1 budget
    wide = settings(sim.url, max_output_tokens=10**6, context_limit=2 * 10**6)
    g = await start_gateway(nursery, wide, sink=RefusalBreakingSink())
    big = (oa if path == OPENAI else an)("oa", max_tokens=10**9)  # refused
    r = await post(g, path, big)
    assert r.status_code == 500
    err = envelope(path, r)
    rid = r.headers["x-request-id"]
    assert err["request_id"] == rid and rid in err["message"]
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert (await post(g, path, (oa if path == OPENAI else an)("oa"))).status_code == 200
