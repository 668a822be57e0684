"""Property: a body either fails parsing with a caller error (400 in the caller's
dialect), or every pure step the gateway then runs on it succeeds.

The steps are the ones that crashed on hostile input (issue 10): the cache-ttl
extension, the prompt-token estimate and bound, the exact and semantic cache keys,
and building the upstream body for both provider wires. Pure and fast: the socket
fuzz (``test_fuzz_gateway``) covers the same bodies end to end.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_bodies import (
    ANTHROPIC_TEMPLATE,
    OPENAI_TEMPLATE,
    RAW_BYTES,
    byte_mutation,
    dumps,
    structured,
)
from trioproxy.cache.keys import exact_key, is_shareable, semantic_namespace, semantic_text
from trioproxy.config.model import CacheConfig
from trioproxy.core.tokens import prompt_tokens
from trioproxy.core.types import Dialect
from trioproxy.dialects import DIALECTS
from trioproxy.errors import CallerError
from trioproxy.pipeline.caching import take_cache_ttl
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.openai import OpenAIAdapter

FAST = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_pure_steps(dialect: Dialect, raw: bytes) -> None:
    try:
        req, _ = take_cache_ttl(DIALECTS[dialect].parse_request(raw))
    except CallerError as err:
        assert 400 <= err.status < 500 and err.message
        return
    messages = req.chat.get("messages", [])
    assert prompt_tokens(messages, bound=True) >= prompt_tokens(messages) >= 0
    exact_key(req, "team:t", "chat")
    semantic_namespace(req, "team:t", "chat")
    semantic_text(req)
    is_shareable(req, CacheConfig(allow_tools=True))
    for adapter in (OpenAIAdapter(), AnthropicAdapter()):
        try:
            adapter.build_request(req, "deployment", "secret")
        except CallerError as err:  # a field the target's wire cannot carry
            assert err.status == 400 and err.message


TEMPLATES: dict[Dialect, dict[str, Any]] = {
    "openai": OPENAI_TEMPLATE,
    "anthropic": ANTHROPIC_TEMPLATE,
}


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_templates_are_valid(dialect: Dialect) -> None:
    DIALECTS[dialect].parse_request(dumps(TEMPLATES[dialect]))


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_structured_bodies(dialect: Dialect) -> None:
    @FAST
    @given(structured(TEMPLATES[dialect]))
    def check(body: dict[str, Any]) -> None:
        run_pure_steps(dialect, dumps(body))

    check()


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_byte_mutations(dialect: Dialect) -> None:
    @FAST
    @given(byte_mutation(dumps(TEMPLATES[dialect])))
    def check(raw: bytes) -> None:
        run_pure_steps(dialect, raw)

    check()


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_raw_bytes(dialect: Dialect) -> None:
    @FAST
    @given(RAW_BYTES | st.binary(max_size=64).map(lambda b: b"{" + b))
    def check(raw: bytes) -> None:
        run_pure_steps(dialect, raw)

    check()
