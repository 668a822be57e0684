"""Prompt-cache markers and keys reach the provider: translation keeps ``cache_control``,
same-dialect passthrough keeps the caller's body, ``prompt_cache_key`` passes through."""

from __future__ import annotations

from typing import Any

import orjson

from trioproxy.dialects.anthropic import parse_request as parse_anthropic
from trioproxy.dialects.openai import parse_request as parse_openai
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.anthropic_chat import chat_to_messages
from trioproxy.providers.openai import OpenAIAdapter

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


def upstream(adapter: Any, body: dict[str, Any], dialect: str) -> dict[str, Any]:
    parse = parse_openai if dialect == "openai" else parse_anthropic
    req = parse(orjson.dumps(body))
    return dict(orjson.loads(adapter.build_request(req, "deployed", "k").body))


def test_openai_markers_survive_translation_to_anthropic() -> None:
    chat = {
        "model": "m",
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "You are terse."},
                {"type": "text", "text": "LONG MANUAL", "cache_control": HOUR},
            ]},
            {"role": "developer", "content": "Be kind.", "cache_control": EPHEMERAL},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "DOCUMENT", "cache_control": EPHEMERAL},
                {"type": "text", "text": "question"},
            ]},
        ],
        "tools": [
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}},
             "cache_control": EPHEMERAL},
        ],
    }  # fmt: skip
    body = chat_to_messages(chat, "claude", 100)
    assert body["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "LONG MANUAL", "cache_control": HOUR},
        {"type": "text", "text": "Be kind.", "cache_control": EPHEMERAL},
    ]
    assert body["messages"][0] == {"role": "user", "content": "first"}  # unmarked: flattened
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "DOCUMENT", "cache_control": EPHEMERAL},
        {"type": "text", "text": "question"},
    ]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == EPHEMERAL


def test_a_marked_single_block_is_never_flattened() -> None:
    chat = {"model": "m", "messages": [
        {"role": "user", "content": "big context", "cache_control": EPHEMERAL},
        {"role": "assistant", "content": [{"type": "text", "text": "noted",
                                           "cache_control": EPHEMERAL}]},
        {"role": "user", "content": "q"},
    ]}  # fmt: skip
    body = chat_to_messages(chat, "claude", 10)
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "big context", "cache_control": EPHEMERAL}
    ]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "noted", "cache_control": EPHEMERAL}
    ]
    assert body["messages"][2]["content"] == "q"
    # no marker anywhere: the plain string system prompt as before
    plain = chat_to_messages({"model": "m", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}, "c", 1)  # fmt: skip
    assert plain["system"] == "s"


def test_tool_results_keep_their_markers() -> None:
    chat = {"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny", "cache_control": EPHEMERAL},
    ]}  # fmt: skip
    body = chat_to_messages(chat, "claude", 10)
    result = body["messages"][2]["content"][0]
    assert result["type"] == "tool_result" and result["cache_control"] == EPHEMERAL


def test_anthropic_to_anthropic_passes_markers_unchanged() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "MANUAL", "cache_control": HOUR}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "doc", "cache_control": EPHEMERAL},
            {"type": "text", "text": "q"}]}],
    }  # fmt: skip
    sent = upstream(AnthropicAdapter(), body, "anthropic")
    assert sent == {**body, "model": "deployed"}


def test_openai_prompt_cache_key_passes_through() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "prompt_cache_key": "tenant-42", "prompt_cache_retention": "24h"}  # fmt: skip
    sent = upstream(OpenAIAdapter(), body, "openai")
    assert sent["prompt_cache_key"] == "tenant-42" and sent["prompt_cache_retention"] == "24h"


def test_beta_allow_and_deny_lists() -> None:
    from trioproxy.config.model import ProviderConfig

    asked = ("a", "b", "c")
    assert ProviderConfig("p", "anthropic", "http://x").betas.filter(asked) == ["a", "b", "c"]
    p = ProviderConfig("p", "anthropic", "http://x", anthropic_betas_allow=frozenset({"a", "c"}),
                       anthropic_betas_deny=frozenset({"c"}))  # fmt: skip
    assert p.betas.filter(asked) == ["a"]


def test_anthropic_caller_version_is_kept_openai_caller_gets_ours() -> None:
    import dataclasses

    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    req = dataclasses.replace(parse_anthropic(orjson.dumps(body)), anthropic_version="2099-01-01",
                              anthropic_beta=("b1", "b2"))  # fmt: skip
    headers = dict(AnthropicAdapter().build_request(req, "c", "k").headers)
    assert headers["anthropic-version"] == "2099-01-01" and headers["anthropic-beta"] == "b1,b2"
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    oreq = dataclasses.replace(parse_openai(orjson.dumps(chat)), anthropic_version="2099-01-01")
    headers = dict(AnthropicAdapter().build_request(oreq, "c", "k").headers)
    assert headers["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in headers
