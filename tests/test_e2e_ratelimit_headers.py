"""Rate-limit headers, read by both official SDKs (``with_raw_response``), and ``retry-after`` on
every 429; also the caller's ``anthropic-beta`` reaching an Anthropic provider, filtered."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.core.tokens import prompt_tokens
from trioproxy.dialects.ratelimit_headers import duration

T = TypeVar("T")
RPM, TPM, MAX_TOKENS = 3, 10_000, 50
MSG: list[Any] = [{"role": "user", "content": "Tell me about trio nurseries."}]
# worst case reserved per request: the prompt's byte bound plus max_tokens
WORST = len(b"Tell me about trio nurseries.") + 4 + MAX_TOKENS
NO_LIMIT_KEY = "tp-free-key-0123456789"


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


async def gateway(nursery: trio.Nursery, tmp: str) -> tuple[Running, Any]:
    sim = await start_simulator(nursery)
    settings = parse_settings(
        {
            "storage": {"state_dir": tmp},
            "providers": {
                "oa": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"},
                "an": {
                    "kind": "anthropic",
                    "base_url": sim.url,
                    "api_key_env": "K",
                    "anthropic_betas_deny": ["files-api-2025-04-14"],
                },
            },
            "models": {
                "gpt": {"provider": "oa", "input_per_mtok": 1, "output_per_mtok": 2},
                "claude": {"provider": "an", "input_per_mtok": 1, "output_per_mtok": 2},
            },
            "routes": {},
            "api_keys": [
                {
                    "name": "k",
                    "key_sha256": hash_key(KEY),
                    "team": "t",
                    "user": "u",
                    "rpm": RPM,
                    "tpm": TPM,
                },
                {"name": "free", "key_sha256": hash_key(NO_LIMIT_KEY), "team": "t", "user": "v"},
            ],
        },
        env={"K": "x"},
    )
    return await start_gateway(nursery, settings), sim


def oai(g: Running, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0)


def ant(g: Running, key: str = KEY, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=g.url, api_key=key, max_retries=0, **kw)


async def test_both_sdks_read_rate_limit_headers(nursery: trio.Nursery, tmp_path: Any) -> None:
    g, _ = await gateway(nursery, str(tmp_path))
    first = await in_thread(lambda: oai(g).chat.completions.with_raw_response.create(
        model="gpt", messages=MSG, max_tokens=MAX_TOKENS))  # fmt: skip
    h = first.headers
    assert first.parse().choices[0].message.content
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
    assert h["x-ratelimit-reset-requests"] == "1m0s"
    # taken right after admission: this request's worst case is still reserved
    assert h["x-ratelimit-limit-tokens"] == str(TPM)
    assert h["x-ratelimit-remaining-tokens"] == str(TPM - WORST)
    assert h["x-ratelimit-reset-tokens"] == "1m0s"
    used = prompt_tokens(MSG) + first.parse().usage.completion_tokens  # type: ignore[union-attr]
    with trio.fail_after(10):  # settled (then recorded) after the answer was sent
        while not [r for r in g.sink.records if r.kind == "request"]:
            await trio.sleep(0.01)

    second = await in_thread(lambda: ant(g).messages.with_raw_response.create(
        model="claude", messages=MSG, max_tokens=MAX_TOKENS))  # fmt: skip
    h = second.headers
    assert second.parse().content
    assert h["anthropic-ratelimit-requests-limit"] == "3"
    assert h["anthropic-ratelimit-requests-remaining"] == "1"
    assert h["anthropic-ratelimit-tokens-limit"] == str(TPM)
    assert h["anthropic-ratelimit-tokens-remaining"] == str(TPM - used - WORST)
    reset = dt.datetime.fromisoformat(
        h["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00")
    )
    assert 55 <= reset.timestamp() - time.time() <= 61

    await in_thread(lambda: oai(g).chat.completions.create(model="gpt", messages=MSG,
                                                          max_tokens=MAX_TOKENS))  # fmt: skip
    with pytest.raises(openai.RateLimitError) as oerr:
        await in_thread(lambda: oai(g).chat.completions.create(model="gpt", messages=MSG))
    oh = oerr.value.response.headers
    assert oh["x-ratelimit-remaining-requests"] == "0" and oh["x-ratelimit-limit-requests"] == "3"
    assert 1 <= int(oh["retry-after"]) <= 60
    with pytest.raises(anthropic.RateLimitError) as aerr:
        await in_thread(lambda: ant(g).messages.create(model="claude", messages=MSG,
                                                       max_tokens=MAX_TOKENS))  # fmt: skip
    ah = aerr.value.response.headers
    assert ah["anthropic-ratelimit-requests-remaining"] == "0"
    assert 1 <= int(ah["retry-after"]) <= 60

    # a key without limits gets no rate-limit headers (nothing to report)
    free = await in_thread(lambda: oai(g, NO_LIMIT_KEY).chat.completions.with_raw_response.create(
        model="gpt", messages=MSG, max_tokens=5))  # fmt: skip
    assert not [k for k in free.headers if k.startswith("x-ratelimit")]


async def test_anthropic_beta_and_version_pass_through_filtered(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    g, sim = await gateway(nursery, str(tmp_path))
    betas = "prompt-caching-2024-07-31,files-api-2025-04-14,extended-cache-ttl-2025-04-11"
    client = ant(g, NO_LIMIT_KEY, default_headers={"anthropic-beta": betas,
                                                   "anthropic-version": "2023-06-01"})  # fmt: skip
    await in_thread(lambda: client.messages.create(model="claude", messages=MSG, max_tokens=5))
    sent = sim.sim.last_chat_headers
    assert sent["anthropic-beta"] == "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11"
    assert sent["anthropic-version"] == "2023-06-01"
    # OpenAI-dialect callers' betas reach an Anthropic provider too; OpenAI providers get none
    extra = {"anthropic-beta": "extended-cache-ttl-2025-04-11"}
    await in_thread(lambda: oai(g, NO_LIMIT_KEY).chat.completions.create(
        model="claude", messages=MSG, max_tokens=5, extra_headers=extra))  # fmt: skip
    assert sim.sim.last_chat_headers["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    await in_thread(lambda: oai(g, NO_LIMIT_KEY).chat.completions.create(
        model="gpt", messages=MSG, max_tokens=5, extra_headers=extra))  # fmt: skip
    assert "anthropic-beta" not in sim.sim.last_chat_headers


def test_reset_durations_use_openai_format() -> None:
    assert [duration(s) for s in (0.25, 6, 1.5, 60, 61, 3600 + 62)] == [
        "250ms", "6s", "1.5s", "1m0s", "1m1s", "1h1m2s",
    ]  # fmt: skip
