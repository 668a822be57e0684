"""``POST /v1/responses`` through the gateway with the official ``openai`` SDK.

Served natively by ``openai`` providers (the simulator's ``/v1/responses``),
translated for Anthropic and OpenAI-compatible chat targets; same routes,
fallback, cache, budgets and ledger as chat.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.rawhttp import post
from tests.settings_factory import KEY, capped_settings, chain_settings
from trioproxy.config.model import CacheConfig
from trioproxy.simulator.faults import Fault

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
QUESTION = "What's the weather like in Lisbon today?"
# demo model -> the simulator path that served it
SERVED_BY = {
    "gpt-4o-mini": "/v1/responses",
    "claude-haiku": "/v1/messages",
}


def oai(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


async def request_record(g: Running, n: int = 1) -> Any:
    with trio.fail_after(5):  # records are submitted right after the answer is sent
        while len(rs := [r for r in g.sink.records if r.kind == "request"]) < n:
            await trio.sleep(0.01)
    return rs[n - 1]


@pytest.mark.parametrize("model", sorted(SERVED_BY))
async def test_openai_sdk_responses_create(gateway: Running, model: str) -> None:
    def call() -> Any:
        return oai(gateway.url, gateway.key).responses.with_raw_response.create(
            model=model,
            instructions="Answer briefly.",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi there"}]}],
            max_output_tokens=200,
            temperature=0.5,
        )

    raw = await trio.to_thread.run_sync(call)
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text and response.output[0].type == "message"
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert raw.headers["x-trioproxy-target"] == model
    assert gateway.sim.stats.snapshot()["by_path"] == {SERVED_BY[model]: 1}
    record = await request_record(gateway)
    assert (record.input_tokens, record.output_tokens) == (usage.input_tokens, usage.output_tokens)
    assert record.outcome == "served" and record.cost_micros > 0


def _stream(client: openai.OpenAI, **kwargs: Any) -> tuple[list[str], str, Any]:
    kinds: list[str] = []
    text = ""
    final = None
    for event in client.responses.create(stream=True, **kwargs):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            final = event.response
    return kinds, text, final


@pytest.mark.parametrize("model", sorted(SERVED_BY))
async def test_openai_sdk_responses_stream(gateway: Running, model: str) -> None:
    def call() -> tuple[list[str], str, Any]:
        return _stream(oai(gateway.url, gateway.key), model=model, input="Tell me about trio.")

    kinds, text, final = await trio.to_thread.run_sync(call)
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.status == "completed" and final.output_text == text and text
    assert final.usage.output_tokens > 0 and final.usage.input_tokens_details.cached_tokens == 0
    record = await request_record(gateway)
    assert record.output_tokens == final.usage.output_tokens and not record.estimated


@pytest.mark.parametrize("model", sorted(SERVED_BY))
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_responses_function_tool_round_trip(
    gateway: Running, model: str, stream: bool
) -> None:
    def round_trip() -> tuple[Any, Any]:
        client = oai(gateway.url, gateway.key)
        first_input: list[Any] = [{"role": "user", "content": QUESTION}]
        if stream:
            kinds, _, first = _stream(client, model=model, input=first_input, tools=TOOLS)
            assert "response.function_call_arguments.delta" in kinds
            assert "response.function_call_arguments.done" in kinds
        else:
            first = client.responses.create(model=model, input=first_input, tools=TOOLS)
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "get_weather" and "city" in orjson.loads(call.arguments)
        follow_up = [
            *first_input,
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"},
        ]  # fmt: skip
        if stream:
            _, _, second = _stream(client, model=model, input=follow_up, tools=TOOLS)
        else:
            second = client.responses.create(model=model, input=follow_up, tools=TOOLS)
        return first, second

    first, second = await trio.to_thread.run_sync(round_trip)
    assert first.status == "completed"
    assert second.status == "completed" and second.output_text
    assert all(item.type == "message" for item in second.output)


async def test_openai_compatible_target_is_translated_to_chat(
    nursery: trio.Nursery,
) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=["openai_compatible"]))

    def calls() -> tuple[Any, tuple[list[str], str, Any]]:
        client = oai(g.url)
        whole = client.responses.create(model="r", input="Hello", max_output_tokens=3)
        return whole, _stream(client, model="r", input="Hello")

    whole, (kinds, text, final) = await trio.to_thread.run_sync(calls)
    assert whole.status == "incomplete"
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage.output_tokens == 3
    assert kinds[-1] == "response.completed" and final.output_text == text
    assert sim.sim.stats.snapshot()["by_path"] == {"/v1/chat/completions": 2}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_midstream_failure_ends_with_response_failed_and_partial_usage(
    nursery: trio.Nursery, kind: str
) -> None:
    sim = await start_simulator(nursery, Fault(reset_after=5, tokens=40))
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=[kind]))

    def call() -> tuple[list[str], str, Any]:
        return _stream(oai(g.url), model="r", input="Tell me a long story.")

    kinds, text, final = await trio.to_thread.run_sync(call)
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert final.status == "failed" and final.error.code == "stream_interrupted"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    assert final.output[0].status == "incomplete" and final.output[0].content[0].text == text
    record = await request_record(g)
    assert record.estimated and record.output_tokens == 5


async def test_budget_stop_ends_with_response_incomplete(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    sim = await start_simulator(nursery, Fault(tokens=200))
    settings = capped_settings(sim.url, str(tmp_path))
    g = await start_gateway(nursery, settings)

    def call() -> tuple[list[str], str, Any]:
        return _stream(oai(g.url), model="r", input="Tell me a long story.")

    kinds, _, final = await trio.to_thread.run_sync(call)
    assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds
    assert final.incomplete_details.reason == "budget_exceeded"
    assert 0 < final.usage.output_tokens < 200


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"temperature": 3}, "temperature"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ],
)
async def test_unsupported_or_invalid_fields_are_400_naming_them(
    gateway: Running, extra: dict[str, Any], param: str
) -> None:
    def call() -> Any:
        with pytest.raises(openai.BadRequestError) as err:
            oai(gateway.url, gateway.key).responses.create(
                **{"model": "chat", "input": "hi", **extra}
            )
        return err.value

    err = await trio.to_thread.run_sync(call)
    assert err.param == param and err.code == "invalid_request"
    assert gateway.sim.stats.snapshot()["requests"] == 0


async def test_responses_fall_back_and_hit_the_cache(nursery: trio.Nursery) -> None:
    down = await start_simulator(nursery, Fault(status=503))
    up = await start_simulator(nursery)
    settings = chain_settings([down.url, up.url], kinds=["openai", "anthropic"])
    route = settings.routes["r"]
    cached = dataclasses.replace(route, cache=CacheConfig(exact_ttl_s=60))
    g = await start_gateway(nursery, dataclasses.replace(settings, routes={"r": cached}))
    body = {"model": "r", "input": "What is a nursery?", "temperature": 0}
    auth = {"authorization": f"Bearer {KEY}"}
    # the first target (native Responses) fails: the Anthropic fallback answers
    first = await post(g.url, "/v1/responses", body, auth)
    assert g.app.cache is not None
    with trio.fail_after(30):  # the cache writer stores the answer after it was sent
        while g.app.cache.writer.statistics().written < 1:
            await trio.sleep(0.01)
    second = await post(g.url, "/v1/responses", body, auth)
    assert (first.status, second.status) == (200, 200), first.body
    assert first.headers["x-trioproxy-target"] == "m1"
    assert second.headers["x-trioproxy-cache"] == "exact"
    a, b = orjson.loads(first.body), orjson.loads(second.body)
    assert b["object"] == "response" and b["status"] == "completed"
    assert b["output"][0]["content"][0]["text"] == a["output"][0]["content"][0]["text"]
    assert down.sim.stats.snapshot()["by_path"] == {"/v1/responses": 1}
    assert up.sim.stats.snapshot()["by_path"] == {"/v1/messages": 1}


async def test_stored_response_calls_are_404_saying_why(gateway: Running) -> None:
    def calls() -> list[Any]:
        client = oai(gateway.url, gateway.key)
        errors = []
        for call in (
            lambda: client.responses.retrieve("resp_123"),
            lambda: client.responses.delete("resp_123"),
            lambda: client.responses.cancel("resp_123"),
        ):
            with pytest.raises(openai.NotFoundError) as err:
                call()
            errors.append(err.value)
        return errors

    for err in await trio.to_thread.run_sync(calls):
        assert "stores no responses" in err.message


@pytest.mark.parametrize("model", sorted(SERVED_BY))
async def test_openai_sdk_responses_stream_helper_accumulates_the_events(
    gateway: Running, model: str
) -> None:
    """``client.responses.stream(...)`` rebuilds the response from the events and checks
    their order (output and content indexes, item ids): it must agree with the final one."""

    def call() -> tuple[Any, Any]:
        client = oai(gateway.url, gateway.key)
        finals = []
        for kwargs in ({"input": "Tell me about trio."}, {"input": QUESTION, "tools": TOOLS}):
            with client.responses.stream(model=model, **kwargs) as stream:
                for _ in stream:
                    pass
                finals.append(stream.get_final_response())
        return finals[0], finals[1]

    text, tool = await trio.to_thread.run_sync(call)
    assert text.status == "completed" and text.output_text
    assert tool.output[0].type == "function_call" and orjson.loads(tool.output[0].arguments)


async def test_a_streamed_reasoning_item_reaches_the_responses_caller(
    nursery: trio.Nursery,
) -> None:
    """A reasoning model's reasoning item (its summary, and the ``encrypted_content`` a
    stateless caller passes back with its next turn) was dropped from a streamed answer: the
    stream is decoded into canonical events, which had no place for it. It is carried whole
    (``OutputItem``), in the stream and in the final response, before the message, as the
    whole answer (relayed verbatim) always had it."""
    from trioproxy.config import hash_key, parse_settings

    sim = await start_simulator(nursery, Fault(tokens=6))
    settings = parse_settings(
        {
            "providers": {"p": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
            "models": {
                "m": {
                    "provider": "p",
                    "deployment": "gpt-5-mini",
                    "input_per_mtok": 1,
                    "output_per_mtok": 1,
                }
            },
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t", "user": "u"}],
        },
        env={"K": "x"},
    )
    g = await start_gateway(nursery, settings)
    ask = {"model": "r", "input": "Think, then say hi.",
           "include": ["reasoning.encrypted_content"]}  # fmt: skip

    def call() -> tuple[list[Any], list[Any], list[Any]]:
        client = oai(g.url)
        whole = client.responses.create(**ask).output  # type: ignore[call-overload]
        kinds, final = [], None
        for event in client.responses.create(**ask, stream=True):  # type: ignore[call-overload]
            if event.type == "response.output_item.done":
                kinds.append(event.item.type)
            if event.type == "response.completed":
                final = event.response
        assert final is not None
        return whole, kinds, final.output

    whole, done, final = await trio.to_thread.run_sync(call)
    assert [i.type for i in whole] == ["reasoning", "message"]
    assert done == ["reasoning", "message"] and [i.type for i in final] == done
    assert whole[0].encrypted_content.startswith("enc_")  # asked for: passed back next turn
    assert final[0].encrypted_content.startswith("enc_")
    assert final[0].summary[0].text == whole[0].summary[0].text
    assert final[1].content[0].text == whole[1].content[0].text
