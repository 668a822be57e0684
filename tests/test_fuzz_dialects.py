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
    EMBEDDINGS_TEMPLATE,
    OPENAI_TEMPLATE,
    RAW_BYTES,
    RESPONSES_TEMPLATE,
    byte_mutation,
    dumps,
    structured,
)
from trioproxy.cache.keys import exact_key, is_shareable, semantic_namespace, semantic_text
from trioproxy.config.model import CacheConfig
from trioproxy.core.tokens import prompt_tokens
from trioproxy.core.types import Dialect
from trioproxy.dialects import DIALECTS
from trioproxy.dialects.embeddings import parse_request as parse_embeddings
from trioproxy.errors import CallerError
from trioproxy.pipeline.caching import take_cache_ttl
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.openai import OpenAIAdapter
from trioproxy.providers.openai_responses import OpenAIResponsesAdapter

FAST = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_pure_steps(dialect: Dialect | str, raw: bytes) -> None:
    if dialect == "embeddings":
        try:
            ereq = parse_embeddings(raw)
        except CallerError as err:
            assert 400 <= err.status < 500 and err.message
            return
        assert ereq.prompt_estimate >= 0
        return
    assert dialect in DIALECTS
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
    adapters = (OpenAIAdapter(), AnthropicAdapter(), OpenAIResponsesAdapter())
    for adapter in adapters if dialect == "responses" else adapters[:2]:
        try:
            adapter.build_request(req, "deployment", "secret")
        except CallerError as err:  # a field the target's wire cannot carry
            assert err.status == 400 and err.message


TEMPLATES: dict[str, dict[str, Any]] = {
    "openai": OPENAI_TEMPLATE,
    "anthropic": ANTHROPIC_TEMPLATE,
    "responses": RESPONSES_TEMPLATE,
    "embeddings": EMBEDDINGS_TEMPLATE,
}
ALL = list(TEMPLATES)


@pytest.mark.parametrize("dialect", ALL)
def test_templates_are_valid(dialect: str) -> None:
    if dialect == "embeddings":
        parse_embeddings(dumps(TEMPLATES[dialect]))
    else:
        DIALECTS[dialect].parse_request(dumps(TEMPLATES[dialect]))  # type: ignore[index]


@pytest.mark.parametrize("dialect", ALL)
def test_structured_bodies(dialect: str) -> None:
    @FAST
    @given(structured(TEMPLATES[dialect]))
    def check(body: dict[str, Any]) -> None:
        run_pure_steps(dialect, dumps(body))

    check()


@pytest.mark.parametrize("dialect", ALL)
def test_byte_mutations(dialect: str) -> None:
    @FAST
    @given(byte_mutation(dumps(TEMPLATES[dialect])))
    def check(raw: bytes) -> None:
        run_pure_steps(dialect, raw)

    check()


@pytest.mark.parametrize("dialect", ALL)
def test_raw_bytes(dialect: str) -> None:
    @FAST
    @given(RAW_BYTES | st.binary(max_size=64).map(lambda b: b"{" + b))
    def check(raw: bytes) -> None:
        run_pure_steps(dialect, raw)

    check()
