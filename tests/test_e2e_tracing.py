"""OpenTelemetry traces through the gateway, read back with the SDK's in-memory exporter."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.rawhttp import post
from tests.settings_factory import KEY, chain_settings
from trioproxy.config import parse_settings
from trioproxy.config.model import TelemetryConfig
from trioproxy.dialects.base import dialect_id
from trioproxy.simulator.faults import Fault
from trioproxy.telemetry.tracing import Tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SECRET = "my secret prompt about nurseries"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    yield exp
    exp.clear()


def tracing(exporter: InMemorySpanExporter, *, log_prompts: bool = False) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, log_prompts=log_prompts)


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


async def spans(exporter: InMemorySpanExporter, n: int) -> list[ReadableSpan]:
    with trio.fail_after(5):  # the request span ends just after the answer is sent
        while len(got := exporter.get_finished_spans()) < n:
            await trio.sleep(0.01)
    return list(got)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_chat_trace_joins_the_callers_trace_with_a_span_per_attempt(
    nursery: trio.Nursery, exporter: InMemorySpanExporter
) -> None:
    down = await start_simulator(nursery, Fault(status=503))
    up = await start_simulator(nursery)
    settings = chain_settings([down.url, up.url], kinds=["openai", "anthropic"])
    g = await start_gateway(nursery, settings, tracing=tracing(exporter))

    def call() -> Any:
        return oai(g.url).chat.completions.create(
            model="r", messages=[{"role": "user", "content": SECRET}],
            extra_headers={"traceparent": TRACEPARENT},
        )  # fmt: skip

    answer = await trio.to_thread.run_sync(call)
    first, second, request = sorted(await spans(exporter, 3), key=lambda s: s.end_time or 0)
    # one trace: the caller's; the request span is the caller span's child
    assert {format(s.context.trace_id, "032x") for s in (first, second, request)} == {TRACE_ID}
    assert request.kind is SpanKind.SERVER and request.name == "chat r"
    assert request.parent is not None and format(request.parent.span_id, "016x") == CALLER_SPAN
    for span in (first, second):
        assert span.kind is SpanKind.CLIENT and span.parent is not None
        assert span.parent.span_id == request.context.span_id
    a0, a1, r = attrs(first), attrs(second), attrs(request)
    assert (a0["trioproxy.attempt.index"], a0["gen_ai.provider.name"]) == (0, "openai")
    assert a0["trioproxy.attempt.outcome"] == "failed" and a0["http.response.status_code"] == 503
    assert first.status.status_code is StatusCode.ERROR
    assert a0["error.type"] == "upstream_unavailable"
    assert (a1["trioproxy.attempt.index"], a1["gen_ai.provider.name"]) == (1, "anthropic")
    assert (a1["server.address"], a1["server.port"]) == ("127.0.0.1", int(up.url.split(":")[-1]))
    assert a1["trioproxy.attempt.outcome"] == "won" and a1["gen_ai.request.model"] == "m1"
    # the span names the provider's id (msg_...); the OpenAI caller saw it as chatcmpl-...
    assert a1["gen_ai.response.id"].startswith("msg_") and a1["gen_ai.response.model"] == "m1"
    assert answer.id == dialect_id("chatcmpl-", a1["gen_ai.response.id"])
    assert a1["gen_ai.response.finish_reasons"] == ("stop",)
    assert a1["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert a1["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert a1["gen_ai.usage.cache_read.input_tokens"] == 0
    assert a1["gen_ai.usage.reasoning.output_tokens"] == 0
    assert r["gen_ai.operation.name"] == "chat" and r["gen_ai.request.model"] == "r"
    assert (r["trioproxy.route"], r["trioproxy.chain"]) == ("r", "default")
    assert r["trioproxy.cache"] == "off" and r["trioproxy.attempts"] == 2
    assert a1["trioproxy.cost_usd"] > 0
    assert r["trioproxy.cost_usd"] == pytest.approx(
        a0["trioproxy.cost_usd"] + a1["trioproxy.cost_usd"]
    )
    assert r["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert request.status.status_code is StatusCode.UNSET
    # each attempt told its provider its own span: W3C traceparent propagated upstream
    assert list(down.sim.traceparents) == [f"00-{TRACE_ID}-{first.context.span_id:016x}-01"]
    assert list(up.sim.traceparents) == [f"00-{TRACE_ID}-{second.context.span_id:016x}-01"]
    # prompts and answers are not attributes unless prompt logging is on
    assert all(SECRET not in str(v) for s in (first, second, request) for v in attrs(s).values())
    assert "gen_ai.input.messages" not in r and "gen_ai.output.messages" not in r


async def test_prompt_logging_puts_messages_on_the_request_span(
    nursery: trio.Nursery, exporter: InMemorySpanExporter
) -> None:
    """A decoded stream (a Responses caller on an Anthropic provider: translated) has its
    answer on the span too; a Responses caller on a Responses provider is relayed verbatim
    (logging prompts never asks for decoding), its span has the prompt only."""
    sim = await start_simulator(nursery)
    for kind, decoded in (("anthropic", True), ("openai", False)):
        exporter.clear()
        g = await start_gateway(
            nursery,
            chain_settings([sim.url], kinds=[kind]),
            tracing=tracing(exporter, log_prompts=True),
        )

        def call(url: str = g.url) -> str:
            stream = oai(url).responses.create(model="r", input=SECRET, stream=True)
            return "".join(e.delta for e in stream if e.type == "response.output_text.delta")

        text = await trio.to_thread.run_sync(call)
        request = next(s for s in await spans(exporter, 2) if s.kind is SpanKind.SERVER)
        r = attrs(request)
        assert orjson.loads(r["gen_ai.input.messages"]) == [{"role": "user", "content": SECRET}]
        if not decoded:
            assert "gen_ai.output.messages" not in r
            continue
        (message,) = orjson.loads(r["gen_ai.output.messages"])
        assert message["parts"][0]["content"] == text and message["finish_reason"] == "stop"


async def test_prompt_logging_leaves_thinking_blocks_in_the_answer(
    nursery: trio.Nursery, exporter: InMemorySpanExporter
) -> None:
    """Logging prompts had every stream decoded (to keep its answer for the span), which
    dropped Claude's thinking blocks and signatures from the caller's stream: observability
    changed the answer. A request whose answer the collector cannot hold whole (thinking,
    n > 1, log probabilities) is relayed as it came, its span without the answer."""
    sim = await start_simulator(nursery, Fault(tokens=5))
    g = await start_gateway(
        nursery, chain_settings([sim.url], kinds=["anthropic"]),
        tracing=tracing(exporter, log_prompts=True),
    )  # fmt: skip

    def call() -> list[str]:
        client = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        thinking = {"type": "enabled", "budget_tokens": 1024}
        with client.messages.stream(
            model="r",
            max_tokens=2048,
            messages=[{"role": "user", "content": SECRET}],
            thinking=thinking,
        ) as s:  # type: ignore[arg-type]
            return [b.type for b in s.get_final_message().content]

    assert await trio.to_thread.run_sync(call) == ["thinking", "text"]
    request = next(s for s in await spans(exporter, 2) if s.kind is SpanKind.SERVER)
    assert "gen_ai.input.messages" in attrs(request)
    assert "gen_ai.output.messages" not in attrs(request)


async def test_prompt_logging_never_decodes_a_verbatim_stream(
    nursery: trio.Nursery, exporter: InMemorySpanExporter
) -> None:
    """A reasoning server streaming ``reasoning_content`` (DeepSeek, vLLM): nothing in the
    request says so, and logging prompts decoded the stream, which dropped the reasoning from
    the caller's answer (review). A verbatim stream stays verbatim; its span has the prompt."""
    from tests.settings_factory import capped_settings

    sim = await start_simulator(nursery, Fault(tokens=5, reasoning_content=True))
    settings = capped_settings(sim.url, tempfile.mkdtemp(prefix="tp-tr-"), daily_usd=100,
                               deployment="o3-mini")  # fmt: skip
    g = await start_gateway(nursery, settings, tracing=tracing(exporter, log_prompts=True))
    body = {"model": "r", "messages": [{"role": "user", "content": SECRET}], "stream": True}
    r = await post(g.url, "/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"})
    assert r.status == 200 and r.body.count(b'"reasoning_content"') == 10  # 2 a token
    request = next(s for s in await spans(exporter, 2) if s.kind is SpanKind.SERVER)
    assert SECRET in attrs(request)["gen_ai.input.messages"]
    assert "gen_ai.output.messages" not in attrs(request)


async def test_embeddings_are_traced(nursery: trio.Nursery, exporter: InMemorySpanExporter) -> None:
    sim = await start_simulator(nursery)
    settings = parse_settings(
        {
            "providers": {"p": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
            "models": {"e": {"provider": "p", "input_per_mtok": 0.02}},
            "api_keys": [{"name": "k", "key_sha256": _hash(KEY), "team": "t", "user": "u"}],
        },
        env={"K": "x"},
    )
    g = await start_gateway(nursery, settings, tracing=tracing(exporter))
    result = await trio.to_thread.run_sync(
        lambda: oai(g.url).embeddings.create(model="e", input="hello world")
    )
    attempt, request = sorted(await spans(exporter, 2), key=lambda s: s.end_time or 0)
    assert attrs(request)["gen_ai.operation.name"] == "embeddings"
    assert attrs(attempt)["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert attrs(attempt)["gen_ai.response.model"] == "e"
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id


async def test_tracing_off_sends_no_traceparent(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([sim.url]))
    assert not g.app.tracing.enabled
    await trio.to_thread.run_sync(
        lambda: oai(g.url).chat.completions.create(
            model="r",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": TRACEPARENT},
        )
    )
    assert sim.sim.stats.snapshot()["requests"] == 1 and not sim.sim.traceparents


def test_configured_tracing_exports_over_otlp_http() -> None:
    on = Tracing.from_config(TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318/v1/traces"))
    try:
        assert on.enabled
    finally:
        on.shutdown()
    assert not Tracing.from_config(TelemetryConfig()).enabled


def _hash(key: str) -> str:
    from trioproxy.config import hash_key

    return hash_key(key)
