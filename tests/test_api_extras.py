"""Pure parts of the extra endpoints: embeddings parsing, model lists, embedding-model config."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trioproxy.config import ConfigError, hash_key, parse_settings
from trioproxy.dialects.embeddings import parse_request
from trioproxy.dialects.models import anthropic_list
from trioproxy.errors import CallerError
from trioproxy.pipeline.routing import require_models, route_for


@pytest.mark.parametrize(
    ("value", "inputs", "bound", "estimate"),
    [
        ("hello world", 1, 11, 2),
        (["héllo", "a b"], 2, 6 + 3, 1 + 2),
        ([1, 2, 3], 1, 3, 3),
        ([[1, 2], [3]], 2, 3, 3),
    ],
)
def test_embedding_input_bound_and_estimate(
    value: Any, inputs: int, bound: int, estimate: int
) -> None:
    req = parse_request(orjson.dumps({"model": "e", "input": value}))
    assert (req.inputs, req.prompt_bound, req.prompt_estimate) == (inputs, bound, estimate)


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x"},
        {"model": "e"},
        {"model": "e", "input": ""},
        {"model": "e", "input": [[]]},
        {"model": "e", "input": [True]},
        {"model": "e", "input": "x", "dimensions": 0},
        {"model": "e", "input": ["x"] * 2049},
    ],
)
def test_embedding_bad_bodies(body: Any) -> None:
    with pytest.raises(CallerError):
        parse_request(orjson.dumps(body))


NAMES = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("query", "ids", "has_more"),
    [
        ({}, NAMES, False),
        ({"limit": "2"}, ["a", "b"], True),
        ({"limit": "2", "after_id": "b"}, ["c", "d"], True),
        ({"limit": "2", "after_id": "d"}, ["e"], False),
        ({"limit": "2", "before_id": "d"}, ["b", "c"], True),
    ],
)
def test_anthropic_model_pages(query: dict[str, str], ids: list[str], has_more: bool) -> None:
    page = orjson.loads(anthropic_list(NAMES, query))
    assert [m["id"] for m in page["data"]] == ids
    assert page["has_more"] is has_more
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[-1])


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "x"}, {"after_id": "zz"}])
def test_anthropic_model_pages_bad_query(query: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        anthropic_list(NAMES, query)


def _config(models: dict[str, Any], chain: list[str], kind: str = "openai") -> dict[str, Any]:
    return {
        "providers": {"p": {"kind": kind, "base_url": "http://127.0.0.1:1", "api_key_env": "K"}},
        "models": models,
        "routes": {"r": {"chains": {"default": [{"model": m} for m in chain]}}},
        "api_keys": [{"name": "k", "key_sha256": hash_key("k" * 20), "team": "t", "user": "u"}],
    }


def test_a_model_without_output_price_is_an_embedding_model() -> None:
    models = {"e": {"provider": "p", "input_per_mtok": 0.02}}
    settings = parse_settings(_config(models, ["e"]), env={"K": "x"})
    assert settings.models["e"].embedding
    require_models(route_for(settings, "r"), embedding=True)
    with pytest.raises(CallerError) as err:
        require_models(route_for(settings, "r"), embedding=False)
    assert err.value.message == (
        "'r' is not a chat model: its route serves the embedding model e; use /v1/embeddings."
    )


def test_embedding_models_on_anthropic_and_mixed_chains_are_config_errors() -> None:
    models = {"e": {"provider": "p", "input_per_mtok": 0.02},
              "c": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 2}}  # fmt: skip
    with pytest.raises(ConfigError) as mixed:
        parse_settings(_config(models, ["e", "c"]), env={"K": "x"})
    assert any("mix embedding models" in p for p in mixed.value.problems)
    # across two chains too: every request to the route was a 400, whichever chain it took
    across = _config(models, ["c"])
    across["routes"]["r"]["chains"]["big"] = [{"model": "e"}]
    across["routes"]["r"]["rules"] = [{"chain": "big", "min_prompt_tokens": 1000}]
    with pytest.raises(ConfigError) as mixed:
        parse_settings(across, env={"K": "x"})
    assert any("r.chains: mix embedding models" in p for p in mixed.value.problems), mixed
    with pytest.raises(ConfigError) as anthropic:
        parse_settings(_config(models, ["e"], kind="anthropic"), env={"K": "x"})
    assert any("models.e.output_per_mtok" in p for p in anthropic.value.problems)


def test_telemetry_section() -> None:
    models = {"c": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 2}}
    base = _config(models, ["c"])
    assert parse_settings(base, env={"K": "x"}).telemetry.otlp_endpoint is None
    on = parse_settings(
        {**base, "telemetry": {"otlp_endpoint": "http://otel:4318/v1/traces", "log_prompts": True}},
        env={"K": "x"},
    ).telemetry
    assert (on.otlp_endpoint, on.log_prompts, on.service_name) == (
        "http://otel:4318/v1/traces", True, "trioproxy",
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_settings(
            {**base, "telemetry": {"otlp_endpoint": "otel:4318", "queue_size": 0, "x": 1}},
            env={"K": "x"},
        )
    problems = [p.split(":")[0] for p in err.value.problems]
    assert sorted(problems) == ["telemetry.otlp_endpoint", "telemetry.queue_size", "telemetry.x"]
