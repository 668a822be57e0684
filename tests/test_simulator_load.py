"""The simulator's load mode: same wire bytes as the full simulator, paced chunks, faults."""

from __future__ import annotations

import orjson
import trio

from trioproxy.config.model import ProviderConfig
from trioproxy.core.sse import SSEParser
from trioproxy.core.types import StreamEvent, TextDelta, UsageReport
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.base import UpstreamRequest
from trioproxy.providers.openai import OpenAIAdapter
from trioproxy.simulator.load import LoadSimulator
from trioproxy.upstream.transport import HttpTransport

MSGS = [{"role": "user", "content": "hello"}]


async def start(nursery: trio.Nursery, **kw: float) -> tuple[LoadSimulator, ProviderConfig]:
    sim = LoadSimulator(**kw)  # type: ignore[arg-type]
    port = await nursery.start(sim.serve, "127.0.0.1", 0)
    return sim, ProviderConfig("p", "openai", f"http://127.0.0.1:{port}")


def request(path: str, stream: bool, fault: str = "") -> UpstreamRequest:
    body: dict[str, object] = {"model": "m", "messages": MSGS, "stream": stream, "max_tokens": 99}
    if stream and path == "/v1/chat/completions":
        body["stream_options"] = {"include_usage": True}
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    if path == "/v1/messages":
        headers += (("anthropic-version", "2023-06-01"),)
    if fault:
        headers += (("x-sim-fault", fault),)
    return UpstreamRequest(path, headers, orjson.dumps(body))


async def test_openai_stream_is_paced_one_chunk_per_write_and_decodes(
    nursery: trio.Nursery,
) -> None:
    sim, p = await start(nursery, tokens=12, chunk_ms=5)
    t = HttpTransport({}, env={})
    decoder, parser = OpenAIAdapter().new_stream_decoder(), SSEParser()
    events: list[StreamEvent] = []
    async with t.open(p, request("/v1/chat/completions", True), connect_timeout=5) as resp:
        assert resp.status == 200
        started = trio.current_time()
        while data := await resp.receive():
            for sse in parser.feed(data):
                events.extend(decoder.feed(sse))
        took = trio.current_time() - started
    assert decoder.done
    assert sum(isinstance(e, TextDelta) for e in events) == 12
    usage = [e for e in events if isinstance(e, UsageReport)]
    assert usage and usage[0].usage.output_tokens == 12
    # Paced, not one burst: 12 chunks 5 ms apart take at least 55 ms however slow the box
    # (how many reads they arrive in depends on the scheduler, so it is not asserted).
    assert took >= 11 * 0.005
    assert sim.stats.output_tokens == 12 and sim.stats.responses == 1


async def test_anthropic_json_and_keep_alive(nursery: trio.Nursery) -> None:
    sim, p = await start(nursery, tokens=7)
    t = HttpTransport({}, env={})
    for _ in range(3):
        async with t.open(p, request("/v1/messages", False), connect_timeout=5) as resp:
            completion = AnthropicAdapter().parse_response(await resp.read(1 << 20))
        assert completion.usage.output_tokens == 7
    assert sim.stats.connections == 1 and sim.stats.output_tokens == 21


async def test_status_fault_and_unsupported_faults(nursery: trio.Nursery) -> None:
    _, p = await start(nursery)
    t = HttpTransport({}, env={})
    req = request("/v1/chat/completions", True, "status=529")
    async with t.open(p, req, connect_timeout=5) as resp:
        assert resp.status == 529 and resp.headers["retry-after"]
        await resp.read(1 << 16)
    req = request("/v1/chat/completions", True, "hang=1")
    async with t.open(p, req, connect_timeout=5) as resp:
        assert resp.status == 400 and b"load mode supports only" in await resp.read(1 << 16)


async def test_client_leaving_mid_stream_is_counted_broken(nursery: trio.Nursery) -> None:
    sim, p = await start(nursery, tokens=2000, chunk_ms=1)
    t = HttpTransport({}, env={})
    with trio.CancelScope() as scope:
        async with t.open(p, request("/v1/chat/completions", True), connect_timeout=5) as resp:
            await resp.receive()
            scope.cancel()
            await resp.receive()
    with trio.fail_after(10):
        while sim.stats.broken == 0:
            await trio.sleep(0.01)
    assert sim.stats.output_tokens < 2000
