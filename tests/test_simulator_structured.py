"""The simulator answers a request for JSON with JSON (a newcomer's demo app parsed prose
and failed): any object for ``json_object``, an object following the schema for
``json_schema``, on the chat and Responses wires, and on the Anthropic wire when the system
prompt asks for it, through the gateway and the official SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pydantic
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY, chain_settings
from trioproxy.core.tokens import estimate_tokens
from trioproxy.providers.anthropic_json import JSON_ONLY, json_instruction
from trioproxy.simulator.plan import VOCABULARY, Intent, make_plan
from trioproxy.simulator.structured import (
    ANY_OBJECT,
    instructed_json,
    json_answer,
    requested_json,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
        "area_km2": {"type": "number"},
        "capital": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["metric", "imperial"]},
        "districts": {"type": "array", "items": {"$ref": "#/$defs/district"}},
        "mayor": {"type": ["string", "null"]},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
    "$defs": {"district": {"type": "object", "properties": {"name": {"type": "string"}}}},
}


def test_what_a_body_asks_for() -> None:
    assert requested_json({}) is None
    assert requested_json({"response_format": {"type": "text"}}) is None
    assert requested_json({"response_format": {"type": "json_object"}}) == ANY_OBJECT
    chat = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    }
    assert requested_json(chat) == SCHEMA
    responses = {"text": {"format": {"type": "json_schema", "name": "c", "schema": SCHEMA}}}
    assert requested_json(responses) == SCHEMA


def test_the_answer_follows_the_schema_and_is_the_same_for_the_same_prompt() -> None:
    text = json_answer("hello", SCHEMA, VOCABULARY)
    value = json.loads(text)
    assert set(value) == set(SCHEMA["properties"])
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert isinstance(value["area_km2"], float) and isinstance(value["capital"], bool)
    assert value["unit"] == "metric" and isinstance(value["mayor"], str)
    assert isinstance(value["districts"][0]["name"], str)
    assert json_answer("hello", SCHEMA, VOCABULARY) == text
    assert set(json.loads(json_answer("x", ANY_OBJECT, VOCABULARY))) == {"answer"}
    loop: dict[str, Any] = {"$ref": "#"}  # a reference to itself ends in null, not a crash
    assert json_answer("x", loop, VOCABULARY) == "null"


def test_the_plan_streams_the_json_one_token_a_piece() -> None:
    intent = Intent("m", 5, "hello", None, True, True, None, json_schema=SCHEMA)
    plan = make_plan(intent, 50, "chatcmpl-", 0)
    assert json.loads("".join(plan.pieces)) == json.loads(json_answer("hello", SCHEMA, VOCABULARY))
    assert all(estimate_tokens(p) == 1 for p in plan.pieces)


def test_an_anthropic_system_prompt_that_asks_for_json() -> None:
    """Anthropic's wire has no JSON mode: the gateway writes an instruction
    (providers/anthropic_json.py), which the simulator's Claude follows as a model would."""
    schema_fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    assert instructed_json(json_instruction(schema_fmt)) == SCHEMA
    assert instructed_json(json_instruction({"type": "json_object"})) == ANY_OBJECT
    blocks = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": JSON_ONLY}]
    assert instructed_json(blocks) == ANY_OBJECT
    assert instructed_json("Be brief.") is None and instructed_json(None) is None
    assert instructed_json("Answer as a JSON object. JSON Schema: {not json") == ANY_OBJECT


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.mark.parametrize(
    "api", ["chat", "chat-stream", "responses", "anthropic", "claude", "claude-parse"]
)
async def test_the_sdk_gets_json_it_can_parse_through_the_gateway(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """``anthropic``: an OpenAI caller on a Claude target (the gateway's instruction);
    ``claude``: an Anthropic caller whose own system prompt asks for JSON; ``claude-parse``:
    the Anthropic SDK's structured output (``messages.parse``: ``output_config.format``)."""
    monkeypatch.setenv("SIMKEY", "x")
    sim = await start_simulator(nursery)
    kinds = ["anthropic"] if api in ("anthropic", "claude", "claude-parse") else ["openai"]
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=kinds))
    if api == "claude":
        system = f"{JSON_ONLY} JSON Schema: {json.dumps(SCHEMA)}"

        def ask_claude() -> str:
            client = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
            r = client.messages.create(
                model="r", max_tokens=400, system=system,
                messages=[{"role": "user", "content": "Describe a city."}],
            )  # fmt: skip
            return "".join(b.text for b in r.content if b.type == "text")

        value = json.loads(await trio.to_thread.run_sync(ask_claude))
        assert set(value) == set(SCHEMA["properties"]) and isinstance(value["population"], int)
        return
    if api == "claude-parse":

        def parse_claude() -> Any:
            client = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
            r = client.messages.parse(
                model="r", max_tokens=400, output_format=City,
                messages=[{"role": "user", "content": "Describe a city."}],
            )  # fmt: skip
            return r.parsed_output

        city = await trio.to_thread.run_sync(parse_claude)
        assert isinstance(city, City) and isinstance(city.population, int) and city.name
        return
    if api == "anthropic":
        api = "chat"
    messages = [{"role": "user", "content": "Describe a city."}]

    def ask() -> str:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
        if api == "chat":
            r = client.chat.completions.create(model="r", messages=messages, response_format=fmt)  # type: ignore[arg-type]
            return r.choices[0].message.content or ""
        if api == "chat-stream":
            chunks = client.chat.completions.create(
                model="r", messages=messages, response_format=fmt, stream=True,  # type: ignore[arg-type]
            )  # fmt: skip
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        text_format = {"format": {"type": "json_schema", "name": "city", "schema": SCHEMA}}
        return client.responses.create(
            model="r", input="Describe a city.", text=text_format
        ).output_text  # type: ignore[arg-type]

    value = json.loads(await trio.to_thread.run_sync(ask))
    assert set(value) == set(SCHEMA["properties"]) and isinstance(value["population"], int)
