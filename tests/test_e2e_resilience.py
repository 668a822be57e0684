"""Fallback, hedging, broken streams and disconnects over real sockets against simulators."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import trio

from tests.chat_client import bearer, chat_body, post_chat
from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY, chain_settings
from trioproxy.simulator.faults import Fault

AUTH = bearer(KEY)
BODY = chat_body("hello there", model="r")


def records(g, kind: str):  # type: ignore[no-untyped-def]
    return [r for r in g.sink.records if r.kind == kind]


async def settled(g, n: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Records are written just after the response ends: wait for ``n`` request records."""
    with trio.fail_after(5):
        while len(records(g, "request")) < n:
            await trio.sleep(0.005)


async def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return await post_chat(url, KEY, body)


async def test_fallback_on_529_honours_retry_after(nursery: trio.Nursery) -> None:
    a = await start_simulator(nursery, Fault(status=529, retry_after=30))
    b = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([a.url, b.url]))
    r = await post(g.url, BODY)
    assert r.status_code == 200, r.text
    assert r.headers["x-trioproxy-target"] == "m1"
    assert r.headers["x-trioproxy-attempts"] == "2"
    await settled(g)
    assert [(x.target, x.outcome, x.status) for x in records(g, "attempt")] == [
        ("m0", "failed", 529),
        ("m1", "won", 200),
    ]
    # retry-after: 30 s keeps m0 out of the next request
    r = await post(g.url, BODY)
    assert r.headers["x-trioproxy-attempts"] == "1"
    assert a.sim.stats.requests == 1 and b.sim.stats.requests == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_hedge_wins_and_loser_is_cancelled(nursery: trio.Nursery, stream: bool) -> None:
    a = await start_simulator(nursery, Fault(ttft_ms=5000))
    b = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([a.url, b.url], hedge_ms=[200, None]))
    t0 = trio.current_time()
    r = await post(g.url, {**BODY, "stream": stream})
    elapsed = trio.current_time() - t0
    assert r.status_code == 200
    assert r.headers["x-trioproxy-target"] == "m1"
    assert 0.2 <= elapsed < 4.0  # the hedge's answer, not the primary's at 5 s
    await settled(g)
    got = [(x.target, x.hedge_role, x.outcome) for x in records(g, "attempt")]
    assert got == [("m0", "primary", "lost"), ("m1", "hedge", "won")]
    with trio.fail_after(4):  # closed, not left hanging until its answer at 5 s
        while a.sim.stats.active:
            await trio.sleep(0.01)


async def test_caller_error_from_provider_is_not_retried(nursery: trio.Nursery) -> None:
    a = await start_simulator(nursery, Fault(status=400))
    b = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([a.url, b.url]))
    r = await post(g.url, BODY)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "upstream_rejected"
    assert b.sim.stats.requests == 0


async def test_all_targets_fail_gives_502_with_retry_after(nursery: trio.Nursery) -> None:
    a = await start_simulator(nursery, Fault(status=503))
    b = await start_simulator(nursery, Fault(status=429, retry_after=7))
    g = await start_gateway(nursery, chain_settings([a.url, b.url]))
    r = await post(g.url, BODY)
    assert r.status_code == 502
    assert r.headers["retry-after"] == "7"
    assert "m0" in r.json()["error"]["message"] and "m1" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_every_target_rate_limited_is_a_429_with_retry_after(
    nursery: trio.Nursery, path: str
) -> None:
    """Every provider said 429: the caller heard a 502 server_error (a newcomer's pass); it
    now hears what the providers said, a 429 rate_limit_error to back off from, in its
    dialect, with the soonest Retry-After, and its SDK raises RateLimitError."""
    a = await start_simulator(nursery, Fault(status=429, retry_after=9))
    b = await start_simulator(nursery, Fault(status=429, retry_after=3))
    g = await start_gateway(nursery, chain_settings([a.url, b.url]))
    headers = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
    body = {**BODY, "max_tokens": 5}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + path, json=body, headers=headers)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    error = r.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "m0" in error["message"] and "m1" in error["message"]


async def test_first_byte_timeout_falls_through(nursery: trio.Nursery) -> None:
    a = await start_simulator(nursery, Fault(hang=True))
    b = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([a.url, b.url], first_byte_s=0.3))
    r = await post(g.url, {**BODY, "stream": True})
    assert r.status_code == 200 and r.headers["x-trioproxy-target"] == "m1"
    await settled(g)
    first = records(g, "attempt")[0]
    assert first.error_kind == "upstream_timeout" and first.outcome == "failed"


async def test_midstream_reset_ends_with_error_event_and_bills_delivered(
    nursery: trio.Nursery,
) -> None:
    a = await start_simulator(nursery, Fault(reset_after=5, tokens=50))
    g = await start_gateway(nursery, chain_settings([a.url]))
    r = await post(g.url, {**BODY, "stream": True})
    assert r.status_code == 200
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events[-1]
    assert '"error"' in events[-1]
    await settled(g)
    req = records(g, "request")[-1]
    assert req.estimated and req.error_kind == "stream_interrupted"
    assert req.output_tokens == a.sim.stats.output_tokens == 5
    assert req.input_tokens == a.sim.stats.input_tokens

    def sdk() -> None:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        for _ in client.chat.completions.create(model="r", messages=BODY["messages"], stream=True):
            pass

    with pytest.raises(openai.APIError):
        await trio.to_thread.run_sync(sdk)


async def test_client_disconnect_closes_upstream_within_100ms(nursery: trio.Nursery) -> None:
    a = await start_simulator(nursery, Fault(chunk_ms=20, tokens=2000))
    g = await start_gateway(nursery, chain_settings([a.url]))
    async with httpx.AsyncClient(timeout=30) as c:
        async with c.stream(
            "POST", g.url + "/v1/chat/completions", json={**BODY, "stream": True}, headers=AUTH
        ) as resp:
            n = 0
            async for _line in resp.aiter_lines():
                n += 1
                if n > 10:
                    break
    sent_at_close = a.sim.stats.output_tokens
    with trio.fail_after(30):  # the simulator would stream for 40 s more
        while a.sim.stats.active:
            await trio.sleep(0.002)
    # within 100 ms of the simulator's own pace (one token per 20 ms chunk), counted in chunks:
    # a pause of this whole process on a loaded box stops the simulator's clock of chunks too
    # (a wall-clock bound failed under two CPU burners)
    assert a.sim.stats.output_tokens - sent_at_close <= 5
    await settled(g)
    req = records(g, "request")[-1]
    assert req.status == 499 and req.estimated
    assert req.output_tokens == a.sim.stats.output_tokens
