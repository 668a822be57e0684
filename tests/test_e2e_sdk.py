"""The official SDKs against the gateway over real sockets (demo config + simulator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest
import trio

from tests.fixtures_gateway import Running

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def oai(g: Running, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url + "/v1", api_key=key or g.key, max_retries=0)


def ant(g: Running, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=g.url, api_key=key or g.key, max_retries=0)


MSG: list[Any] = [{"role": "user", "content": "Tell me about trio nurseries."}]


@pytest.mark.parametrize("model", ["chat", "gpt-4o-mini", "claude-haiku"])
async def test_openai_sdk_non_stream(gateway: Running, model: str) -> None:
    raw = await in_thread(
        lambda: oai(gateway).chat.completions.with_raw_response.create(
            model=model, messages=MSG, max_tokens=50
        )
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-trioproxy-target"] in gateway.settings.models
    assert raw.headers["x-trioproxy-attempts"] == "1"
    assert raw.headers["x-trioproxy-route"] == model


async def test_openai_sdk_n_choices_are_relayed_and_billed(gateway: Running) -> None:
    """``n`` = 3 to an OpenAI target: three choices back, and the ledger bills the
    provider's usage (every choice's tokens)."""
    completion = await in_thread(
        lambda: oai(gateway).chat.completions.create(
            model="gpt-4o-mini", messages=MSG, max_tokens=50, n=3
        )
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content for c in completion.choices)
    usage = completion.usage
    assert usage is not None and usage.completion_tokens >= 3
    with trio.fail_after(5):  # the record is written just after the response ends
        while not (records := [r for r in gateway.sink.records if r.kind == "request"]):
            await trio.sleep(0.01)
    assert records[-1].output_tokens == usage.completion_tokens


@pytest.mark.parametrize("model", ["chat", "claude-haiku"])
async def test_openai_sdk_stream_with_usage(gateway: Running, model: str) -> None:
    def run() -> tuple[str, Any, str | None]:
        stream = oai(gateway).chat.completions.create(
            model=model, messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        text, usage, finish = "", None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return text, usage, finish

    text, usage, finish = await in_thread(run)
    assert text and finish == "stop"
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    with trio.fail_after(5):  # the record is written just after the response ends
        while not (records := [r for r in gateway.sink.records if r.kind == "request"]):
            await trio.sleep(0.01)
    assert records[-1].output_tokens == usage.completion_tokens
    assert not records[-1].estimated


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
async def test_anthropic_sdk_non_stream_and_stream(gateway: Running, model: str) -> None:
    client = ant(gateway)
    msg = await in_thread(
        lambda: client.messages.create(model=model, max_tokens=64, system="Be brief.", messages=MSG)
    )
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0

    def run() -> tuple[str, Any]:
        with client.messages.stream(model=model, max_tokens=64, messages=MSG) as stream:
            text = "".join(stream.text_stream)
            return text, stream.get_final_message()

    text, final = await in_thread(run)
    assert text and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


async def test_sdk_errors_openai(gateway: Running) -> None:
    with pytest.raises(openai.AuthenticationError):
        await in_thread(
            lambda: oai(gateway, "wrong").chat.completions.create(model="chat", messages=MSG)
        )
    with pytest.raises(openai.BadRequestError):
        await in_thread(
            lambda: oai(gateway).chat.completions.create(
                model="chat", messages=[{"role": "wizard", "content": 3}]
            )
        )  # type: ignore[list-item]
    with pytest.raises(openai.NotFoundError):
        await in_thread(
            lambda: oai(gateway).chat.completions.create(model="no-such-route", messages=MSG)
        )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": "notaschema"},
                }
            },
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_openai_sdk_bad_effort_or_schema_is_400_naming_it(
    gateway: Running, extra: dict[str, Any], param: str
) -> None:
    """Both were answered 200 (OpenAI answers 400)."""

    def call() -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as err:
            oai(gateway).chat.completions.create(model="chat", messages=MSG, **extra)
        return err.value

    err = await in_thread(call)
    assert err.param == param and err.code == "invalid_request", err.body
    assert isinstance(err.body, dict) and err.body["type"] == "invalid_request_error"
    assert gateway.sim.stats.snapshot()["requests"] == 0


async def test_sdk_errors_anthropic(gateway: Running) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        await in_thread(
            lambda: ant(gateway, "wrong").messages.create(model="chat", max_tokens=10, messages=MSG)
        )
    with pytest.raises(anthropic.BadRequestError):
        await in_thread(
            lambda: ant(gateway).messages.create(model="chat", max_tokens=-5, messages=MSG)
        )
    with pytest.raises(anthropic.NotFoundError):
        await in_thread(
            lambda: ant(gateway).messages.create(model="no-such-route", max_tokens=10, messages=MSG)
        )


async def test_models_lists_routes_and_models(gateway: Running) -> None:
    models = await in_thread(lambda: oai(gateway).models.list())
    ids = {m.id for m in models}
    assert {"chat", "extract", "gpt-4o-mini", "claude-sonnet"} <= ids


async def test_head_on_models_is_get_without_the_body(gateway: Running) -> None:
    headers = {"authorization": f"Bearer {gateway.key}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as c:
        got = await c.get("/v1/models", headers=headers)
        head = await c.head("/v1/models", headers=headers)
    assert got.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
