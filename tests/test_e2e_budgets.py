"""Budgets through the gateway: a burst of 1,000 concurrent requests is admitted exactly."""

from __future__ import annotations

import anthropic
import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.rawhttp import post_json
from tests.settings_factory import KEY, capped_settings
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings
from trioproxy.simulator.faults import Fault

# price: $1000 per 1M tokens = 1000 µUSD per token. Prompt "hi" is bounded at 4 + 2 = 6
# tokens, max_tokens 10: the worst case of one request is 16 tokens = 16,000 µUSD.
WORST_USD = 0.016
N = 100
LIMIT_USD = round(N * WORST_USD + WORST_USD / 2, 6)  # fits exactly N worst cases
MSGS = [{"role": "user", "content": "hi"}]


HELD_TARGET = {"model": "m", "first_byte_timeout_s": 300, "connect_timeout_s": 60}


def budget_settings(url: str, state_dir: str, redis_url: str | None = None) -> Settings:
    storage: dict[str, object] = {"state_dir": state_dir}
    if redis_url:
        storage["redis_url"] = redis_url
    return parse_settings(
        {
            # 1,000 at once from one key: budgets decide, not the per-key cap or the shedding
            "server": {"max_in_flight_per_key": 0, "max_in_flight": 2048, "queue_max": 256},
            "storage": storage,
            "providers": {
                "p": {
                    "kind": "openai",
                    "base_url": url,
                    "api_key_env": "K",
                    "max_connections": 1024,
                }
            },
            "models": {"m": {"provider": "p", "input_per_mtok": 1000, "output_per_mtok": 1000}},
            # the answers are held until every admission is decided: on a busy shared box that
            # took past the default first-byte timeout (30 s), and 3 held requests became 502s
            "routes": {"r": {"chains": {"default": [HELD_TARGET]}}},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
            # exactness, not latency: a busy shared box may answer a store call slowly
            "budgets": {"teams": {"t1": {"daily_usd": LIMIT_USD}}, "store_timeout_s": 30.0},
        },
        env={"K": "x"},
    )


async def burst(url: str, n: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    body = {"model": "r", "messages": MSGS, "max_tokens": 10}

    async def one() -> None:
        out.append(
            await post_json(url, "/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"})
        )

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return out


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_thousand_concurrent_requests_admit_exactly_n(
    nursery: trio.Nursery,
    tmp_path: object,
    store: str,
    request: pytest.FixtureRequest,
) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    # answers are held back until every admission is decided (a settle frees room)
    sim = await start_simulator(nursery, Fault(tokens=10))
    sim.sim.hold = hold = trio.Event()
    g = await start_gateway(nursery, budget_settings(sim.url, str(tmp_path), redis_url))
    responses: list[tuple[int, bytes]] = []

    async def run_burst() -> None:
        responses.extend(await burst(g.url, 1000))

    async with trio.open_nursery() as inner:
        inner.start_soon(run_burst)
        with trio.fail_after(300):  # observed state: each request upstream or refused
            while sim.sim.stats.active + len(g.sink.records) < 1000:
                await trio.sleep(0.05)
        hold.set()
    statuses = [status for status, _ in responses]
    assert statuses.count(200) == N, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(429) == 1000 - N
    denied = next(body for status, body in responses if status == 429)
    err = orjson.loads(denied)["error"]
    assert err["code"] == "budget_exceeded" and "t1" in err["message"]
    with trio.fail_after(60):  # a request's record follows its response (after the settle)
        while sum(r.kind == "request" and r.status == 200 for r in g.sink.records) < N:
            await trio.sleep(0.05)
    spent = sum(r.cost_micros for r in g.sink.records if r.kind == "request")
    assert 0 < spent <= LIMIT_USD * 1_000_000
    assert sim.sim.stats.requests == N


async def test_capped_reservation_meters_the_stream_and_stops_at_the_limit(
    nursery: trio.Nursery,
    tmp_path: object,
) -> None:
    """max_tokens absent: the worst case ($4.10) exceeds the $0.05 budget, so without a cap the
    request would be refused. With a $0.01 cap it is admitted, and the stream is metered: the
    reservation grows with the answer until the budget is full, then a budget error ends it."""
    sim = await start_simulator(nursery, Fault(tokens=200))
    settings = capped_settings(sim.url, str(tmp_path))
    g = await start_gateway(nursery, settings)
    r = await post_json(
        g.url,
        "/v1/chat/completions",
        {"model": "r", "messages": MSGS, "stream": True},
        {"authorization": f"Bearer {KEY}"},
    )
    assert r[0] == 200
    events = [line for line in r[1].decode().splitlines() if line.startswith("data: ")]
    assert "budget_exceeded" in events[-1] and "[DONE]" not in r[1].decode()
    with trio.fail_after(5):
        while not [x for x in g.sink.records if x.kind == "request"]:
            await trio.sleep(0.01)
    rec = next(x for x in g.sink.records if x.kind == "request")
    # billed for what was received; at most one chunk (1 token = $0.001) past the limit
    assert 40_000 <= rec.cost_micros <= 50_000 + 1_000
    assert rec.output_tokens < 200
    # the budget is now spent: the next request is refused up front, and both SDKs raise
    # their own RateLimitError for it
    r = await post_json(
        g.url,
        "/v1/chat/completions",
        {"model": "r", "messages": MSGS},
        {"authorization": f"Bearer {KEY}"},
    )
    assert r[0] == 429

    def sdk_calls() -> None:
        oai = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as oe:
            oai.chat.completions.create(model="r", messages=MSGS)  # type: ignore[arg-type]
        assert oe.value.code == "budget_exceeded"
        ant = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.RateLimitError):
            ant.messages.create(model="r", max_tokens=5, messages=MSGS)  # type: ignore[arg-type]

    await trio.to_thread.run_sync(sdk_calls)


async def test_a_whole_answer_on_a_capped_route_reserves_its_worst_case(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    """A reservation cap grows along a stream; a whole (non-streamed) answer cannot be cut
    along the way, so it reserves its worst case as on a route without a cap. It was admitted
    under the cap and billed in full at the end: $0.20 on a $0.05 budget, from one request
    (a reviewer saw $8.20 on $2 from 40 at once)."""
    sim = await start_simulator(nursery, Fault(tokens=200))
    g = await start_gateway(nursery, capped_settings(sim.url, str(tmp_path)))
    auth = {"authorization": f"Bearer {KEY}"}
    whole = {"model": "r", "messages": MSGS}  # no max_tokens: worst case $4.10 > $0.05
    assert (await post_json(g.url, "/v1/chat/completions", whole, auth))[0] == 429
    claude = {**whole, "max_tokens": 4000}
    assert (await post_json(g.url, "/v1/messages", claude, auth))[0] == 429
    assert sim.sim.stats.requests == 0
    assert [r.outcome for r in g.sink.records] == ["denied", "denied"]
    fits = {**whole, "max_tokens": 30}  # worst case 36 tokens = $0.036: admitted, served
    status, _ = await post_json(g.url, "/v1/chat/completions", fits, auth)
    assert status == 200
    with trio.fail_after(30):
        while not (recs := [x for x in g.sink.records if x.outcome == "served"]):
            await trio.sleep(0.01)
    assert 0 < recs[0].cost_micros <= 36_000


async def test_the_sdks_do_not_retry_a_refusal_that_holds_for_hours(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    """A request over the day's budget waits until the day ends: retry-after says so, and
    x-should-retry: false keeps both SDKs (default max_retries=2) from asking again in vain.
    Without it the Anthropic SDK slept out the retry-after (hours) before its next try."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, budget_settings(sim.url, str(tmp_path)))
    big = {"model": "r", "messages": MSGS, "max_tokens": 2_000}  # worst $2.006 > the limit

    def sdk_calls() -> list[tuple[int, str | None]]:
        seen: list[tuple[int, str | None]] = []
        with pytest.raises(openai.RateLimitError) as oe:
            openai.OpenAI(base_url=g.url + "/v1", api_key=KEY).chat.completions.create(**big)
        seen.append((int(oe.value.response.headers["retry-after"]),
                     oe.value.response.headers.get("x-should-retry")))  # fmt: skip
        with pytest.raises(anthropic.RateLimitError) as ae:
            anthropic.Anthropic(base_url=g.url, api_key=KEY).messages.create(**big)
        seen.append((int(ae.value.response.headers["retry-after"]),
                     ae.value.response.headers.get("x-should-retry")))  # fmt: skip
        return seen

    with trio.fail_after(60):  # a regression sleeps for hours in the abandoned thread
        seen = await trio.to_thread.run_sync(sdk_calls, abandon_on_cancel=True)

    def refused() -> int:
        return sum(x.kind == "request" and x.status == 429 for x in g.sink.records)

    with trio.fail_after(30):  # every call was answered before its SDK raised
        while refused() < 2:
            await trio.sleep(0.01)
    if all(wait > 60 for wait, _ in seen):  # (not in the day's last minute)
        assert [flag for _, flag in seen] == ["false", "false"]
        assert refused() == 2  # one call each, no retries
    assert sim.sim.stats.requests == 0


async def test_per_key_rpm_limit_through_the_gateway(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    sim = await start_simulator(nursery)
    settings = parse_settings(
        {
            "storage": {"state_dir": str(tmp_path)},
            "providers": {"p": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
            "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
            "api_keys": [
                {"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1", "rpm": 2}
            ],
        },
        env={"K": "x"},
    )
    g = await start_gateway(nursery, settings)
    auth = {"authorization": f"Bearer {KEY}"}
    body = {"model": "r", "messages": MSGS}
    assert [(await post_json(g.url, "/v1/chat/completions", body, auth))[0] for _ in range(3)] == [
        200,
        200,
        429,
    ]

    def sdk() -> None:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="r", messages=MSGS)  # type: ignore[arg-type]
        assert err.value.code == "rate_limited"
        assert 1 <= int(err.value.response.headers["retry-after"]) <= 60

    await trio.to_thread.run_sync(sdk)
