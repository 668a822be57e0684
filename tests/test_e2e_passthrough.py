"""Same-wire streams are relayed verbatim; everything else goes through the decoder.

The simulator's OpenAI chunks carry ``system_fingerprint``, which the gateway's own
OpenAI encoder never writes: its presence in what the caller receives shows the
upstream bytes went through as they are.
"""

from __future__ import annotations

import tempfile
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY, capped_settings, chain_settings
from trioproxy.config import hash_key, parse_settings
from trioproxy.simulator.faults import Fault
from trioproxy.simulator.plan import answer_pieces

AUTH = {"authorization": f"Bearer {KEY}"}
MSGS = [{"role": "user", "content": "hello there"}]
MARK = "fp_trioproxy_sim"


async def stream_text(url: str, path: str, body: dict[str, Any]) -> str:
    headers = {**AUTH, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(url + path, json={**body, "stream": True}, headers=headers)
    assert r.status_code == 200, r.text
    return r.text


async def test_openai_same_wire_is_verbatim_and_sdk_reads_it(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(tokens=25))
    g = await start_gateway(nursery, chain_settings([sim.url]))
    text = await stream_text(g.url, "/v1/chat/completions", {"model": "r", "messages": MSGS})
    assert MARK in text and text.endswith("data: [DONE]\n\n")
    assert text.count("data: [DONE]") == 1
    assert '"usage":{' not in text  # the caller did not ask; the gateway did, upstream
    opts = {"stream_options": {"include_usage": True}}
    text = await stream_text(
        g.url, "/v1/chat/completions", {"model": "r", "messages": MSGS, **opts}
    )
    assert '"usage":{' in text and '"completion_tokens":25' in text

    def sdk() -> tuple[str, int]:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        parts, usage = [], 0
        for chunk in client.chat.completions.create(
            model="r",
            messages=MSGS,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        ):
            parts += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage.completion_tokens if chunk.usage else usage
        return "".join(parts), usage

    answer, usage = await trio.to_thread.run_sync(sdk)
    assert answer and usage == 25
    with trio.fail_after(30):  # a request's record follows its response
        while len(records := [r for r in g.sink.records if r.kind == "request"]) < 3:
            await trio.sleep(0.01)
    assert [r.output_tokens for r in records] == [25, 25, 25] and not any(
        r.estimated for r in records
    )


async def test_anthropic_same_wire_is_verbatim(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(tokens=15))
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=["anthropic"]))
    body = {"model": "r", "messages": MSGS, "max_tokens": 100}
    text = await stream_text(g.url, "/v1/messages", body)
    assert text.count("event: message_stop") == 1 and text.rstrip().endswith(
        '{"type":"message_stop"}'
    )

    def sdk() -> str:
        client = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        with client.messages.stream(model="r", max_tokens=100, messages=MSGS) as s:  # type: ignore[arg-type]
            return s.get_final_text()

    assert await trio.to_thread.run_sync(sdk)
    record = [r for r in g.sink.records if r.kind == "request"][-1]
    assert record.output_tokens == 15 and not record.estimated


async def test_translation_caching_and_metering_use_the_decoder(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(tokens=10))
    # the caller speaks Anthropic, the provider OpenAI: translated, not verbatim
    g = await start_gateway(nursery, chain_settings([sim.url]))
    body = {"model": "r", "messages": MSGS, "max_tokens": 50}
    assert MARK not in await stream_text(g.url, "/v1/messages", body)
    # stream caching on the route: every event is decoded; a budget, capped (metered along
    # the verbatim stream) or not, does not need it
    for route, verbatim in (
        ({"cache": {"exact_ttl_s": 60}}, False),
        ({"reservation_cap_usd": 0.001}, True),
        ({}, True),
    ):
        settings = parse_settings(
            {
                "storage": {"state_dir": tempfile.mkdtemp(prefix="tp-pt-")},
                "providers": {"p": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
                "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
                "routes": {"r": {"chains": {"default": [{"model": "m"}]}, **route}},
                "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t", "user": "u"}],
                "budgets": {"teams": {"t": {"daily_usd": 100}}},
            },
            env={"K": "x"},
        )
        g2 = await start_gateway(nursery, settings)
        body = {"model": "r", "messages": MSGS, "temperature": 0}
        assert (MARK in await stream_text(g2.url, "/v1/chat/completions", body)) == verbatim, route


async def test_idle_timeout_mid_stream_ends_with_an_error_event(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(tokens=20, chunk_ms=400))
    g = await start_gateway(nursery, chain_settings([sim.url], idle_s=0.1))
    text = await stream_text(g.url, "/v1/chat/completions", {"model": "r", "messages": MSGS})
    assert MARK in text and "idle timeout" in text and "[DONE]" not in text
    with trio.fail_after(10):
        while not [r for r in g.sink.records if r.kind == "request"]:
            await trio.sleep(0.01)
    record = next(r for r in g.sink.records if r.kind == "request")
    assert record.error_kind == "stream_interrupted" and record.estimated


async def test_idle_timeout_of_a_decoded_stream_ends_with_an_error_event(
    nursery: trio.Nursery,
) -> None:
    """The decoding relay (an Anthropic caller on an OpenAI provider) keeps the same idle
    deadline as the verbatim one: a silence past it ends the stream with an error event in
    the caller's dialect, and a steady stream slower than it in total is not cut."""
    sim = await start_simulator(nursery, Fault(tokens=20, chunk_ms=400))
    g = await start_gateway(nursery, chain_settings([sim.url], idle_s=0.1))
    body = {"model": "r", "messages": MSGS, "max_tokens": 100}
    text = await stream_text(g.url, "/v1/messages", body)
    assert MARK not in text and "event: error" in text and "idle timeout" in text
    assert "message_stop" not in text
    with trio.fail_after(10):
        while not [r for r in g.sink.records if r.kind == "request"]:
            await trio.sleep(0.01)
    record = next(r for r in g.sink.records if r.kind == "request")
    assert record.error_kind == "stream_interrupted"
    # 40 x 30 ms: 1.2 s in total, more than the 1 s idle limit, never 1 s silent (the
    # margin holds a scheduler stall of ~0.9 s on a busy box)
    fast = await start_simulator(nursery, Fault(tokens=40, chunk_ms=30))
    g2 = await start_gateway(nursery, chain_settings([fast.url], idle_s=1.0))
    text = await stream_text(g2.url, "/v1/messages", body)
    assert "message_stop" in text and "event: error" not in text


async def test_thinking_blocks_reach_the_caller_on_a_capped_route(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    """A capped reservation is metered along the stream; it used to switch the stream to the
    decoder, which drops Claude's thinking blocks and their signatures (Anthropic needs them
    passed back with a tool-use turn). Now it meters the verbatim stream: the SDK gets
    [thinking, text], the thinking billed as output, and the budget still ends a long one."""
    sim = await start_simulator(nursery, Fault(tokens=10))
    # the whole answer reserves its worst case (max_tokens 2048 at $1,000 per 1M: $2.08)
    settings = capped_settings(sim.url, str(tmp_path), kind="anthropic", daily_usd=2.5)
    g = await start_gateway(nursery, settings)
    thinking = {"type": "enabled", "budget_tokens": 1024}

    def sdk() -> list[Any]:
        client = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        with client.messages.stream(
            model="r",
            max_tokens=2048,
            messages=MSGS,
            thinking=thinking,  # type: ignore[arg-type]
        ) as s:
            return list(s.get_final_message().content)

    def sdk_whole() -> list[Any]:
        client = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        answer = client.messages.create(
            model="r",
            max_tokens=2048,
            messages=MSGS,
            thinking=thinking,  # type: ignore[arg-type]
        )
        return list(answer.content)

    whole = await trio.to_thread.run_sync(sdk_whole)
    assert [b.type for b in whole] == ["thinking", "text"]
    blocks = await trio.to_thread.run_sync(sdk)
    assert [b.type for b in blocks] == ["thinking", "text"]
    thought = "".join(answer_pieces("thinking", 20))  # 2 thinking tokens per answer token
    assert blocks[0].thinking == thought and blocks[0].signature.startswith("sig_")
    with trio.fail_after(30):  # a request's record follows its response
        while len(records := [r for r in g.sink.records if r.kind == "request"]) < 2:
            await trio.sleep(0.01)
    assert [r.output_tokens for r in records] == [30, 30]  # 10 + 2 x 10 of thinking
    assert not any(r.estimated for r in records)


async def test_a_long_thinking_phase_meets_the_budget(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    """Claude's thinking is billed as output but carried by no canonical event: a capped
    reservation did not grow with it, so a long thinking phase ran past the team's budget
    unchecked (and a stream cut later was billed without it). The decoders now count it
    (``hidden_tokens``): the stream ends in its thinking, with the budget's error, billed
    within the budget (the reservation holds the prompt's worst case and the output so far)."""
    sim = await start_simulator(nursery, Fault(tokens=100, chunk_ms=1))  # 200 thinking tokens
    g = await start_gateway(nursery, capped_settings(sim.url, str(tmp_path), kind="anthropic"))
    thinking = {"type": "enabled", "budget_tokens": 1024}
    body = {"model": "r", "messages": MSGS, "max_tokens": 4096, "thinking": thinking}
    text = await stream_text(g.url, "/v1/messages", body)
    last = text.rsplit("event: ", 1)[-1]
    assert last.startswith("error") and "daily budget" in last, last
    assert '"thinking_delta"' in text and '"text_delta"' not in text  # cut while thinking
    with trio.fail_after(30):
        while not (records := [r for r in g.sink.records if r.kind == "request"]):
            await trio.sleep(0.01)
    # $1,000 per 1M tokens: $0.05 is 50 tokens; one event past at most
    assert records[0].estimated and 0 < records[0].output_tokens < 50
    assert records[0].cost_micros <= 50_000 + 1_000


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_streamed_reasoning_meets_the_budget_on_both_relays(
    nursery: trio.Nursery, tmp_path: Any, path: str
) -> None:
    """A reasoning server that streams its reasoning as ``reasoning_content`` (DeepSeek,
    vLLM): on the decoding relay (an Anthropic caller) a reasoning chunk decodes to no event,
    so no budget check ran until the answer's first text, and a capped team was billed all of
    its reasoning past its budget. Each relay now checks the chunk: the stream ends in its
    reasoning, billed within the budget (one event past at most)."""
    sim = await start_simulator(nursery, Fault(tokens=100, chunk_ms=1, reasoning_content=True))
    settings = capped_settings(sim.url, str(tmp_path), deployment="o3-mini")
    g = await start_gateway(nursery, settings)
    body = {"model": "r", "messages": MSGS, "max_tokens": 4096}
    text = await stream_text(g.url, path, body)
    assert ("budget" in text.rsplit("data: ", 1)[-1]) and "[DONE]" not in text
    assert "text_delta" not in text and '"content":" ' not in text  # cut while reasoning
    with trio.fail_after(30):
        while not (records := [r for r in g.sink.records if r.kind == "request"]):
            await trio.sleep(0.01)
    assert records[0].estimated and 0 < records[0].output_tokens < 50
    # all of it was reasoning: the estimate says so (said reasoning_tokens 0)
    assert records[0].reasoning_tokens == records[0].output_tokens
    assert records[0].cost_micros <= 50_000 + 1_000
