"""``POST /v1/embeddings`` through the gateway over real sockets, with the official SDK."""

from __future__ import annotations

import math
from typing import Any

import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, RunningSim, start_gateway, start_simulator
from tests.rawhttp import post, post_json
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings
from trioproxy.core.tokens import estimate_tokens
from trioproxy.simulator.extras import vector
from trioproxy.simulator.faults import Fault

AUTH = {"authorization": f"Bearer {KEY}"}


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


def embed_settings(urls: list[str], state_dir: str, **extra: Any) -> Settings:
    """Embedding models e0, e1 (one per simulator; $1000/Mtok input, no output price),
    chained in route ``emb``; a chat model ``c`` on the first simulator."""
    key: dict[str, Any] = {"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}
    key.update(extra.pop("key", {}))
    model = extra.pop("model", {})
    data: dict[str, Any] = {
        "storage": {"state_dir": state_dir},
        "providers": {
            f"p{i}": {"kind": "openai", "base_url": u, "api_key_env": "K"}
            for i, u in enumerate(urls)
        },
        "models": {
            **{
                f"e{i}": {"provider": f"p{i}", "input_per_mtok": 1000, **model}
                for i in range(len(urls))
            },
            "c": {"provider": "p0", "input_per_mtok": 1, "output_per_mtok": 2},
        },
        "routes": {
            "emb": {
                "chains": {"default": [{"model": f"e{i}"} for i in range(len(urls))]},
                **extra.pop("route", {}),
            }
        },
        "api_keys": [key],
        **extra,
    }
    return parse_settings(data, env={"K": "sim-key"})


async def request_records(g: Running, n: int) -> list[Any]:
    with trio.fail_after(30):  # records are submitted right after the answer is sent
        while len(rs := [r for r in g.sink.records if r.kind == "request"]) < n:
            await trio.sleep(0.01)
    return rs


async def test_openai_sdk_embeddings_create(gateway: Running) -> None:
    texts = ["Trio nurseries keep tasks in scope.", "Budgets stay exact."]

    def call() -> Any:
        return oai(gateway.url).embeddings.with_raw_response.create(model="embed", input=texts)

    raw = await trio.to_thread.run_sync(call)
    result = raw.parse()
    assert [d.embedding for d in result.data] == [vector(t, 64) for t in texts]
    tokens = sum(estimate_tokens(t) for t in texts)
    assert result.usage.prompt_tokens == tokens
    assert raw.headers["x-trioproxy-route"] == "embed"
    assert raw.headers["x-trioproxy-target"] == "text-embedding-3-small"
    (record,) = await request_records(gateway, 1)
    assert (record.route, record.input_tokens, record.output_tokens) == ("embed", tokens, 0)
    assert record.cost_micros == math.ceil(tokens * 0.02)  # $0.02/Mtok = 0.02 µUSD a token
    assert record.outcome == "served" and not record.estimated


async def test_embeddings_fall_back_to_the_next_target(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    down = await start_simulator(nursery, Fault(status=503))
    up = await start_simulator(nursery)
    g = await start_gateway(nursery, embed_settings([down.url, up.url], str(tmp_path)))
    status, body = await post_json(g.url, "/v1/embeddings", {"model": "emb", "input": "hi"}, AUTH)
    assert status == 200, body
    assert orjson.loads(body)["data"][0]["embedding"] == vector("hi", 64)
    await request_records(g, 1)  # attempt records are submitted before the request's
    records = [r for r in g.sink.records if r.kind == "attempt"]
    assert [(r.target, r.outcome) for r in records] == [("e0", "failed"), ("e1", "won")]


async def test_embeddings_budget_reserves_the_input_bound_and_settles_to_actual(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    sim = await start_simulator(nursery)
    # $1000/Mtok = 1,000 µUSD per token. "hello world": bound 11 bytes (11,000 µUSD
    # reserved), actual 2 tokens (2,000 µUSD). A 15,000 µUSD day fits three such
    # requests only if each settles to its actual cost.
    settings = embed_settings(
        [sim.url], str(tmp_path), budgets={"teams": {"t1": {"daily_usd": 0.015}}}
    )
    g = await start_gateway(nursery, settings)
    small = {"model": "emb", "input": "hello world"}
    statuses = [(await post_json(g.url, "/v1/embeddings", small, AUTH))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    big = {"model": "emb", "input": "x" * 10_000}  # bound 10,000 tokens: over the day's rest
    status, body = await post_json(g.url, "/v1/embeddings", big, AUTH)
    assert status == 429
    assert orjson.loads(body)["error"]["code"] == "budget_exceeded"
    assert sim.sim.stats.snapshot()["requests"] == 3


async def test_embeddings_per_key_rpm(nursery: trio.Nursery, tmp_path: Any) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, embed_settings([sim.url], str(tmp_path), key={"rpm": 1}))

    def calls() -> None:
        client = oai(g.url)
        client.embeddings.create(model="emb", input="one")
        with pytest.raises(openai.RateLimitError) as err:
            client.embeddings.create(model="emb", input="two")
        assert err.value.code == "rate_limited"

    await trio.to_thread.run_sync(calls)


async def test_embeddings_exact_cache(nursery: trio.Nursery, tmp_path: Any) -> None:
    sim = await start_simulator(nursery)
    settings = embed_settings([sim.url], str(tmp_path), route={"cache": {"exact_ttl_s": 60}})
    g = await start_gateway(nursery, settings)
    body = {"model": "emb", "input": ["a cached text"], "dimensions": 8}
    first = await post(g.url, "/v1/embeddings", body, AUTH)
    # asked again at once: the answer was queued for the cache when it was sent, before the
    # settle's store round trip
    second = await post(g.url, "/v1/embeddings", body, AUTH)
    other = await post(g.url, "/v1/embeddings", {**body, "dimensions": 16}, AUTH)
    assert [r.status for r in (first, second, other)] == [200, 200, 200]
    assert first.headers["x-trioproxy-cache"] == "miss"
    assert second.headers["x-trioproxy-cache"] == "exact"
    assert other.headers["x-trioproxy-cache"] == "miss"
    assert orjson.loads(second.body)["data"] == orjson.loads(first.body)["data"]
    assert sim.sim.stats.snapshot()["requests"] == 2
    records = await request_records(g, 3)
    hit = next(r for r in records if r.cache == "exact")
    assert hit.saved_micros == 3 * 1000  # 3 tokens at $1000/Mtok
    assert {r.headers["x-trioproxy-reason"] for r in (first, second, other)} == {"default"}
    # a hit names its entry, as chat hits do: the admin API's delete takes it
    entry = second.headers["x-trioproxy-cache-entry"]
    assert g.app.cache is not None and await g.app.cache.delete(entry)
    third = await post(g.url, "/v1/embeddings", body, AUTH)
    assert third.headers["x-trioproxy-cache"] == "miss"


async def test_an_answer_over_the_requests_bound_is_a_502(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    # model max_dimensions 4: the bound of 4 inputs is 64 KiB + 4 x (128 + 4 x 32) bytes;
    # the simulator answers 4 x 3072 floats (~130 KB): the gateway stops reading at its bound
    sim = await start_simulator(nursery)
    g = await start_gateway(
        nursery, embed_settings([sim.url], str(tmp_path), model={"max_dimensions": 4})
    )
    body = {"model": "emb", "input": ["a", "b", "c", "d"], "dimensions": 3072}
    status, raw = await post_json(g.url, "/v1/embeddings", body, AUTH)
    assert status == 502, raw
    error = orjson.loads(raw)["error"]
    assert error["code"] == "upstream_unavailable" and error["type"] == "server_error"
    assert f"bound of {64 * 1024 + 4 * (128 + 4 * 32)} bytes" in error["message"]
    ok = {"model": "emb", "input": ["a", "b", "c", "d"], "dimensions": 4}
    status, raw = await post_json(g.url, "/v1/embeddings", ok, AUTH)
    assert status == 200 and len(orjson.loads(raw)["data"]) == 4


async def test_drain_deadline_ends_an_embeddings_request_with_an_error(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    sim = await start_simulator(nursery, Fault(hang=True))
    settings = embed_settings([sim.url], str(tmp_path), server={"shutdown_grace_s": 0.5})
    g = await start_gateway(nursery, settings)
    out: list[tuple[int, bytes]] = []

    async def call() -> None:
        out.append(await post_json(g.url, "/v1/embeddings", {"model": "emb", "input": "x"}, AUTH))

    async with trio.open_nursery() as clients:
        clients.start_soon(call)
        with trio.fail_after(30):
            while sim.sim.stats.snapshot()["requests"] < 1:
                await trio.sleep(0.01)
        g.shutdown.set()
    ((status, raw),) = out
    assert status == 503, raw
    assert orjson.loads(raw)["error"]["code"] == "gateway_shutting_down"
    (record,) = await request_records(g, 1)
    assert record.outcome == "interrupted" and record.error_kind == "gateway_shutting_down"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"model": "c", "input": "hi"}, "model"),
        (
            "/v1/chat/completions",
            {"model": "emb", "messages": [{"role": "user", "content": "x"}]},
            "model",
        ),
        ("/v1/embeddings", {"model": "emb", "input": []}, "input"),
        ("/v1/embeddings", {"model": "emb", "input": [1, "a"]}, "input"),
        (
            "/v1/embeddings",
            {"model": "emb", "input": "a", "encoding_format": "hex"},
            "encoding_format",
        ),
    ],
)
async def test_embeddings_bad_requests_are_400_in_the_openai_envelope(
    nursery: trio.Nursery, sim: RunningSim, tmp_path: Any, path: str, body: Any, param: str
) -> None:
    g = await start_gateway(nursery, embed_settings([sim.url], str(tmp_path)))
    status, raw = await post_json(g.url, path, body, AUTH)
    assert status == 400, raw
    error = orjson.loads(raw)["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
