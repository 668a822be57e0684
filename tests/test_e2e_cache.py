"""Caching through the gateway: exact and semantic hits, scoped per team, safely."""

from __future__ import annotations

import tempfile
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from tests.chat_client import chat_body, post_chat
from tests.fixtures_gateway import Running, start_gateway, start_simulator
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings
from trioproxy.simulator.faults import Fault

KEY_A, KEY_B, KEY_A2 = "tp-team-a-key-000001", "tp-team-b-key-000002", "tp-team-a-key-000003"


def cache_settings(
    url: str, *, semantic: bool = False, scope: str = "team", **extra: Any
) -> Settings:
    cache: dict[str, Any] = {"exact_ttl_s": 600, "scope": scope, **extra}
    if semantic:
        cache |= {"semantic_ttl_s": 600, "semantic_threshold": 0.9}
    return parse_settings(
        {
            "storage": {"state_dir": tempfile.mkdtemp(prefix="tp-cache-")},
            "providers": {"p": {"kind": "openai", "base_url": url, "api_key_env": "K"}},
            "models": {"m": {"provider": "p", "input_per_mtok": 2.5, "output_per_mtok": 10}},
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}, "cache": cache}},
            "api_keys": [
                {
                    "name": "a",
                    "key_sha256": hash_key(KEY_A),
                    "team": "A",
                    "user": "a1",
                    "admin": True,
                },
                {"name": "a2", "key_sha256": hash_key(KEY_A2), "team": "A", "user": "a2"},
                {"name": "b", "key_sha256": hash_key(KEY_B), "team": "B", "user": "b1"},
            ],
        },
        env={"K": "x"},
    )


async def ask(g: Running, key: str, content: str, **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    body = chat_body(content, model="r", **{"temperature": 0, **extra})
    return await post_chat(g.url, key, body, headers=headers)


async def written(g: Running) -> None:
    """Cache writes happen off the hot path: wait until the writer has drained."""
    cache = g.app.cache
    assert cache is not None
    with trio.fail_after(10):
        while cache.writer.statistics().queued:
            await trio.sleep(0.01)
    await trio.sleep(0.05)


async def test_exact_hit_is_free_and_scoped_per_team(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url))
    first = await ask(g, KEY_A, "What is a nursery?")
    assert first.headers["x-trioproxy-cache"] == "miss"
    await written(g)
    again = await ask(g, KEY_A2, "What is a nursery?")  # same team, other user
    assert again.headers["x-trioproxy-cache"] == "exact"
    assert (
        again.json()["choices"][0]["message"]["content"]
        == first.json()["choices"][0]["message"]["content"]
    )
    other = await ask(g, KEY_B, "What is a nursery?")  # team B never reads team A's answer
    assert other.headers["x-trioproxy-cache"] == "miss"
    assert sim.sim.stats.requests == 2
    hit = next(r for r in g.sink.records if r.kind == "request" and r.cache == "exact")
    miss = next(r for r in g.sink.records if r.kind == "request" and r.cache == "miss")
    assert hit.cost_micros == 0 and hit.saved_micros == miss.cost_micros > 0 and hit.team == "A"
    # parameters change the answer: another temperature or max_tokens is another key
    assert (await ask(g, KEY_A, "What is a nursery?", max_tokens=7)).headers[
        "x-trioproxy-cache"
    ] == "miss"


async def test_an_immediate_repeat_is_an_exact_hit(nursery: trio.Nursery) -> None:
    """The answer goes to the cache writer as soon as it is delivered, not after the budget
    settle's store round trip: a client that asks again at once (the next request on its
    connection, no wait for the writer) gets the exact hit, not a second upstream call."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url))
    body = {"model": "r", "messages": [{"role": "user", "content": "Ask me twice"}]}
    async with httpx.AsyncClient(timeout=30) as c:
        for expected in ("miss", "exact", "exact"):
            r = await c.post(g.url + "/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {KEY_A}"})  # fmt: skip
            assert r.headers["x-trioproxy-cache"] == expected
    assert sim.sim.stats.requests == 1


async def test_global_scope_shares_across_teams(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url, scope="global"))
    await ask(g, KEY_A, "Shared question")
    await written(g)
    assert (await ask(g, KEY_B, "Shared question")).headers["x-trioproxy-cache"] == "exact"


async def test_bypass_and_cache_ttl_extension(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url))
    await ask(g, KEY_A, "q1")
    await written(g)
    r = await ask(g, KEY_A, "q1", headers={"x-trioproxy-cache": "off"})
    assert r.headers["x-trioproxy-cache"] == "bypass"
    r = await ask(g, KEY_A, "q1", cache_ttl=0)
    assert r.status_code == 200 and r.headers["x-trioproxy-cache"] == "bypass"
    r = await ask(g, KEY_A, "q1", cache_ttl="soon")
    assert r.status_code == 400 and r.json()["error"]["param"] == "cache_ttl"
    assert sim.sim.stats.requests == 3  # the extension never reached the provider as a field


async def test_truncated_and_failed_answers_are_never_cached(nursery: trio.Nursery) -> None:
    broken = await start_simulator(nursery, Fault(reset_after=3, tokens=30))
    g = await start_gateway(nursery, cache_settings(broken.url))
    r = await ask(g, KEY_A, "break please", stream=True)
    assert '"error"' in r.text
    await written(g)
    r = await ask(g, KEY_A, "break please", stream=True)
    assert r.headers["x-trioproxy-cache"] == "miss"
    ok = await start_simulator(nursery, Fault(tokens=50))
    g2 = await start_gateway(nursery, cache_settings(ok.url))
    await ask(g2, KEY_A, "cut me short", max_tokens=5)  # finish_reason "length"
    await written(g2)
    assert (await ask(g2, KEY_A, "cut me short", max_tokens=5)).headers[
        "x-trioproxy-cache"
    ] == "miss"


async def test_cached_stream_replays_in_both_sdks(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url))
    messages: list[Any] = [{"role": "user", "content": "Replay me as a stream"}]

    def openai_stream() -> tuple[str, str]:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY_A, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="r",
            messages=messages,
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return text, raw.headers["x-trioproxy-cache"]

    text1, status1 = await trio.to_thread.run_sync(openai_stream)
    await written(g)
    text2, status2 = await trio.to_thread.run_sync(openai_stream)
    assert (status1, status2) == ("miss", "exact") and text1 == text2 and text2

    def anthropic_stream() -> tuple[str, int]:
        client = anthropic.Anthropic(base_url=g.url, api_key=KEY_A, max_retries=0)
        with client.messages.stream(model="r", max_tokens=64, messages=messages) as stream:
            text = "".join(stream.text_stream)
            return text, stream.get_final_message().usage.output_tokens

    # an Anthropic caller reads the same cached answer (the key is dialect-independent)
    text3, out = await trio.to_thread.run_sync(anthropic_stream)
    assert text3 == text1 and out > 0
    assert sim.sim.stats.requests == 1


@pytest.mark.parametrize(
    ("question", "paraphrase"),
    [("How do I reset my password?", "How can I reset my password?")],
)
async def test_semantic_hit_with_similarity_and_guards(
    nursery: trio.Nursery,
    question: str,
    paraphrase: str,
) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url, semantic=True))
    await ask(g, KEY_A, question)
    await written(g)
    r = await ask(g, KEY_A, paraphrase)
    assert r.headers["x-trioproxy-cache"] == "semantic"
    assert 0.9 <= float(r.headers["x-trioproxy-cache-similarity"]) <= 1.0
    # never across teams, never across system prompts or temperature buckets
    assert (await ask(g, KEY_B, paraphrase)).headers["x-trioproxy-cache"] == "miss"
    r = await ask(g, KEY_A, paraphrase, temperature=0.3)
    assert r.headers["x-trioproxy-cache"] == "miss"
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(
            g.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY_A}"},
            json={
                "model": "r",
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": paraphrase},
                ],
            },
        )
    assert r.headers["x-trioproxy-cache"] == "miss"
    # a near miss with another number is refused by the guard
    await ask(g, KEY_A, "How many days are in 3 weeks?")
    await written(g)
    r = await ask(g, KEY_A, "How many days are in 4 weeks?")
    assert r.headers["x-trioproxy-cache"] == "miss"


async def test_semantic_entry_waits_for_confirmation_by_other_keys(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    settings = cache_settings(sim.url, semantic=True, confirm_users=2, exact_ttl_s=0)
    g = await start_gateway(nursery, settings)
    await ask(g, KEY_A, "How do I reset my password?")
    await written(g)
    r = await ask(g, KEY_A2, "How can I reset my password?")
    assert r.headers["x-trioproxy-cache"] == "miss"  # a2's ask confirms a's entry once
    await written(g)
    r = await ask(g, KEY_A, "How do I reset my password?")
    assert r.headers["x-trioproxy-cache"] == "semantic"  # its writer is always served
    r = await ask(g, KEY_A2, "How do I reset my password?")
    assert r.headers["x-trioproxy-cache"] == "semantic"  # a + a2: confirmed
    async with httpx.AsyncClient(timeout=30) as c:
        m = await c.get(g.admin_url + "/metrics", headers={"authorization": f"Bearer {KEY_A}"})
    assert "trioproxy_semantic_unconfirmed_total 1.0" in m.text
    assert "trioproxy_semantic_near_threshold_misses_total" in m.text


async def test_admin_flush_removes_exact_and_semantic_entries(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url, semantic=True))
    await ask(g, KEY_A, "How do I reset my password?")
    await written(g)
    assert (await ask(g, KEY_A, "How can I reset my password?")).headers[
        "x-trioproxy-cache"
    ] == "semantic"
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(
            g.admin_url + "/admin/api/cache/flush",
            json={"team": "A", "route": "r"},
            headers={"authorization": f"Bearer {KEY_A}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["exact"] == 1 and r.json()["semantic"] == 1
    assert (await ask(g, KEY_A, "How can I reset my password?")).headers[
        "x-trioproxy-cache"
    ] == "miss"


async def test_admin_deletes_one_reported_bad_hit(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url, semantic=True))
    for q in ("How do I reset my password?", "What is the capital of France?"):
        await ask(g, KEY_A, q)
    await written(g)
    bad = await ask(g, KEY_A, "How can I reset my password?")
    assert bad.headers["x-trioproxy-cache"] == "semantic"
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(
            g.admin_url + "/admin/api/cache/delete",
            json={"entry": bad.headers["x-trioproxy-cache-entry"]},
            headers={"authorization": f"Bearer {KEY_A}"},
        )
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert (await ask(g, KEY_A, "How can I reset my password?")).headers[
        "x-trioproxy-cache"
    ] == "miss"
    # the other entry is untouched
    assert (await ask(g, KEY_A, "What is the capital of France?")).headers[
        "x-trioproxy-cache"
    ] == "exact"


async def test_a_cache_store_that_fails_does_not_skip_records_or_settle(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache store runs before accounting (so an immediate repeat hits); if it raises,
    the usage record is still written with the answer's cost (the settle ran)."""
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, cache_settings(sim.url))
    assert g.app.cache is not None

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("cache writer broken")

    monkeypatch.setattr(g.app.cache, "store", broken)
    r = await ask(g, KEY_A, "Is the record written?")
    assert r.status_code == 200
    with trio.fail_after(10):
        while not [x for x in g.sink.records if x.kind == "request"]:
            await trio.sleep(0.01)
    (rec,) = [x for x in g.sink.records if x.kind == "request"]
    assert rec.status == 200 and rec.cost_micros > 0 and rec.error_kind is None


async def test_a_premium_caller_is_not_served_the_cheaper_chains_answer(
    nursery: trio.Nursery,
) -> None:
    """A route whose rules send high priority to a premium chain: the premium caller's
    request goes to the premium model, not the default chain's cached answer to the same
    prompt; each chain's repeat is still a hit."""
    sim = await start_simulator(nursery)
    settings = cache_settings(sim.url)
    raw = {
        "storage": {"state_dir": settings.storage.state_dir},
        "providers": {"p": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
        "models": {m: {"provider": "p", "input_per_mtok": 2.5, "output_per_mtok": 10}
                   for m in ("m", "m-premium")},
        "routes": {"r": {"chains": {"default": [{"model": "m"}], "premium": [{"model": "m-premium"}]},
                         "rules": [{"chain": "premium", "priority": ["high"]}],
                         "cache": {"exact_ttl_s": 600}}},
        "api_keys": [{"name": "a", "key_sha256": hash_key(KEY_A), "team": "A", "user": "a1"}],
    }  # fmt: skip
    g = await start_gateway(nursery, parse_settings(raw, env={"K": "x"}))
    high = {"x-trioproxy-priority": "high"}
    first = await ask(g, KEY_A, "which chain?")
    assert first.headers["x-trioproxy-cache"] == "miss"
    await written(g)
    premium = await ask(g, KEY_A, "which chain?", headers=high)
    assert premium.status_code == 200 and premium.headers["x-trioproxy-cache"] == "miss"
    assert premium.json()["model"] != first.json()["model"]
    await written(g)
    assert (await ask(g, KEY_A, "which chain?", headers=high)).headers[
        "x-trioproxy-cache"
    ] == "exact"
    assert (await ask(g, KEY_A, "which chain?")).headers["x-trioproxy-cache"] == "exact"
