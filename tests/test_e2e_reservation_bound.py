"""A budget that only the full input bound exceeds refuses the request (issue 10 item 7).

Price: $1000 per 1M tokens = 1,000 µUSD per token; the team may spend $0.5 a day
(500 tokens). Each request below has a 2-token prompt and ``max_tokens`` 10: a
messages-only bound reserves 16 tokens ($0.016) and would admit it; its tools,
images, files or tool-result images make the true bound far larger, so it must be
refused before it reaches a provider. Nothing is spent: overspend 0.
"""

from __future__ import annotations

import tempfile
from typing import Any

import orjson
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.rawhttp import post_json
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings

SCHEMA = {"type": "object", "properties": {f"p{i}": {"type": "string",
          "description": "x" * 50} for i in range(40)}}  # fmt: skip
PNG = "data:image/png;base64," + "A" * 50_000
HI = [{"role": "user", "content": "hi"}]


def settings(url: str, kind: str) -> Settings:
    return parse_settings(
        {
            "storage": {"state_dir": tempfile.mkdtemp(prefix="tp-")},
            "providers": {"p": {"kind": kind, "base_url": url, "api_key_env": "K",
                                "image_tokens": 1600}},
            "models": {"m": {"provider": "p", "input_per_mtok": 1000, "output_per_mtok": 1000}},
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
            "budgets": {"teams": {"t1": {"daily_usd": 0.5}}},
        },
        env={"K": "x"},
    )  # fmt: skip


def oa(**extra: Any) -> dict[str, Any]:
    return {"model": "r", "messages": HI, "max_tokens": 10, **extra}


def an(**extra: Any) -> dict[str, Any]:
    return {"model": "r", "messages": HI, "max_tokens": 10, **extra}


IMAGE_B64 = {"type": "base64", "media_type": "image/png", "data": "A" * 50_000}
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("openai-tools", "/v1/chat/completions",
     oa(tools=[{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}])),
    ("openai-image", "/v1/chat/completions",
     oa(messages=[{"role": "user", "content": [
         {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": PNG}}]}])),
    ("openai-file", "/v1/chat/completions",
     oa(messages=[{"role": "user", "content": [
         {"type": "file", "file": {"file_data": "data:application/pdf;base64," + "B" * 900}}]}])),
    ("openai-response-format", "/v1/chat/completions",
     oa(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}})),
    ("anthropic-tools", "/v1/messages",
     an(tools=[{"name": "f", "input_schema": SCHEMA}])),
    ("anthropic-image", "/v1/messages",
     an(messages=[{"role": "user", "content": [{"type": "image", "source": IMAGE_B64}]}])),
    ("anthropic-tool-result-image", "/v1/messages",
     an(messages=[
         {"role": "user", "content": "hi"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                            "input": {}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                       "content": [{"type": "image", "source": IMAGE_B64}]}]},
     ])),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_full_bound_refuses_what_a_messages_only_bound_admits(
    nursery: trio.Nursery, kind: str
) -> None:
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, settings(sim.url, kind))
    auth = {"authorization": f"Bearer {KEY}"}
    for name, path, body in CASES:
        status, raw = await post_json(g.url, path, body, auth)
        if name == "anthropic-tool-result-image" and kind == "openai":  # cannot reach it at all
            assert status == 400 and b"tool_result" in raw, (name, status, raw[:300])
            continue
        assert status == 429, (name, status, raw[:300])
        err = orjson.loads(raw)["error"]
        assert "budget" in (err.get("code", "") + err.get("type", "") + err["message"]), name
    assert sim.sim.stats.requests == 0  # nothing reached a provider: nothing spent
    status, _ = await post_json(g.url, "/v1/chat/completions", oa(), auth)
    assert status == 200  # the same budget serves a request whose bound fits
