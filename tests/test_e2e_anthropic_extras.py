"""The Anthropic SDK's other calls: ``models.list()`` / ``retrieve`` and
``messages.count_tokens``, through the gateway over real sockets."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY, chain_settings
from trioproxy.simulator.extras import count_tokens_body
from trioproxy.simulator.faults import Fault

MSGS: list[Any] = [{"role": "user", "content": "How do trio nurseries work?"}]


def ant(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)


async def test_anthropic_sdk_models_list_and_retrieve(gateway: Running) -> None:
    names = [*gateway.settings.routes, *gateway.settings.models]

    def calls() -> tuple[list[str], list[str], Any, list[str]]:
        client = ant(gateway.url, gateway.key)
        every = [m.id for m in client.models.list()]
        paged = [m.id for m in client.models.list(limit=2)]  # the SDK follows has_more
        one = client.models.retrieve("chat")
        oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
        return every, paged, one, [m.id for m in oai.models.list()]

    every, paged, one, openai_ids = await trio.to_thread.run_sync(calls)
    assert every == paged == openai_ids == names
    assert (one.type, one.id) == ("model", "chat")


async def test_anthropic_sdk_unknown_model_is_404(gateway: Running) -> None:
    def call() -> None:
        with pytest.raises(anthropic.NotFoundError) as err:
            ant(gateway.url, gateway.key).models.retrieve("nope")
        assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    await trio.to_thread.run_sync(call)


async def test_anthropic_sdk_count_tokens_passthrough_and_estimate(gateway: Running) -> None:
    system = "Answer in one line."
    expected = orjson.loads(
        count_tokens_body({"model": "claude-haiku", "messages": MSGS, "system": system})
    )["input_tokens"]

    def calls() -> tuple[Any, Any]:
        client = ant(gateway.url, gateway.key)
        exact = client.messages.with_raw_response.count_tokens(
            model="claude-haiku", messages=MSGS, system=system
        )
        estimated = client.messages.with_raw_response.count_tokens(
            model="gpt-4o-mini", messages=MSGS, system=system
        )
        return exact, estimated

    exact, estimated = await trio.to_thread.run_sync(calls)
    assert exact.parse().input_tokens == expected
    assert exact.headers["x-trioproxy-token-count"] == "provider"
    assert not getattr(exact.parse(), "estimated", False)
    assert estimated.headers["x-trioproxy-token-count"] == "estimated"
    assert estimated.parse().estimated is True  # type: ignore[attr-defined]
    assert estimated.parse().input_tokens == expected  # same estimator as the simulator
    assert gateway.sim.stats.snapshot()["by_path"].get("/v1/messages/count_tokens") == 1


async def test_count_tokens_estimates_when_the_anthropic_target_is_down(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    down = await start_simulator(nursery, Fault(status=503))
    g = await start_gateway(nursery, chain_settings([down.url], kinds=["anthropic"]))

    def call() -> Any:
        return ant(g.url, KEY).messages.with_raw_response.count_tokens(model="r", messages=MSGS)

    raw = await trio.to_thread.run_sync(call)
    assert raw.headers["x-trioproxy-token-count"] == "estimated"
    assert raw.parse().input_tokens > 0


async def test_count_tokens_bad_request_is_400_in_the_anthropic_envelope(
    gateway: Running,
) -> None:
    def call() -> None:
        with pytest.raises(anthropic.BadRequestError) as err:
            ant(gateway.url, gateway.key).messages.count_tokens(
                model="claude-haiku",
                messages=[{"role": "robot", "content": "x"}],  # type: ignore[typeddict-item]
            )
        assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]

    await trio.to_thread.run_sync(call)
    # a count has no output cap: max_tokens of any value is refused, as Anthropic's API does
    async with httpx.AsyncClient(timeout=30) as c:
        for cap in (-1, "10", 100):
            r = await c.post(gateway.url + "/v1/messages/count_tokens", headers={
                "x-api-key": gateway.key, "anthropic-version": "2023-06-01"},
                json={"model": "claude-haiku", "messages": MSGS, "max_tokens": cap})  # fmt: skip
            assert r.status_code == 400, r.text
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert "max_tokens" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "status", "counted", "kind", "outcome"),
    [
        (None, 200, "provider", None, "served"),
        (Fault(status=503), 200, "estimated", "upstream_unavailable", "served"),
        (Fault(status=422), 422, None, "upstream_rejected", "error"),
    ],
    ids=["provider", "provider-down", "provider-rejects"],
)
async def test_count_tokens_is_one_free_record_per_request(
    nursery: trio.Nursery, fault: Fault | None, status: int, counted: str | None,
    kind: str | None, outcome: str,
) -> None:  # fmt: skip
    """Counting is free upstream, but every counted request is in the ledger (and has its
    access line): one request record at $0, with the provider's failure when it failed
    (the caller then got an estimate, or the provider's own 4xx)."""
    sim = await start_simulator(nursery, *([fault] if fault else []))
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=["anthropic"]))
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + "/v1/messages/count_tokens", json={"model": "r", "messages": MSGS},
                         headers={"x-api-key": KEY})  # fmt: skip
    assert r.status_code == status, r.text
    assert r.headers.get("x-trioproxy-token-count") == counted
    rid = r.headers["x-request-id"]
    records = [x for x in g.sink.records if x.request_id == rid]
    assert [(x.kind, x.status, x.error_kind, x.outcome, x.route) for x in records] == [
        ("request", status, kind, outcome, "r")
    ]
    assert records[0].cost_micros == 0 and records[0].input_tokens == 0
    assert len(g.sink.records) == 1
