"""Chain selection and context fitting: pure, on config values."""

from __future__ import annotations

import orjson
import pytest

from trioproxy.config.model import (
    Chain,
    ModelConfig,
    ProviderConfig,
    RouteConfig,
    SelectRule,
    Target,
)
from trioproxy.core.types import ChatRequest
from trioproxy.dialects import DIALECTS
from trioproxy.errors import CallerError, ErrorKind
from trioproxy.pipeline.routing import (
    RoutePlan,
    fit_context,
    fit_stops,
    fit_tool_images,
    select_chain,
)

LIMITS = {"small": 1_000, "big": 100_000}
MODELS = {
    name: ModelConfig(name, "p", name, 1.0, 1.0, context_limit=limit)
    for name, limit in LIMITS.items()
}
SMALL = Target("small", resolved=MODELS["small"])
BIG = Target("big", resolved=MODELS["big"])
ROUTE = RouteConfig(
    name="chat",
    chains={
        "default": Chain("default", (SMALL, BIG)),
        "cheap": Chain("cheap", (SMALL,)),
    },
    rules=(
        SelectRule(
            "cheap",
            priority=frozenset({"low"}),
            max_prompt_tokens=500,
            max_output_tokens=500,
            reason="short low-priority",
        ),
    ),
)


@pytest.mark.parametrize(
    ("priority", "prompt", "max_tokens", "chain", "reason"),
    [
        ("low", 100, 100, "cheap", "short low-priority"),
        ("low", 600, 100, "default", "default"),
        ("low", 100, 4096, "default", "default"),
        ("high", 100, 100, "default", "default"),
    ],
)
def test_select_chain_by_rules(priority: str, prompt: int, max_tokens: int, chain: str,
                               reason: str) -> None:  # fmt: skip
    plan = select_chain(ROUTE, priority=priority, prompt_tokens=prompt,  # type: ignore[arg-type]
                        max_tokens=max_tokens)  # fmt: skip
    assert (plan.chain.name, plan.reason) == (chain, reason)


def test_fit_context_drops_targets_too_small_and_refuses_when_none_fit() -> None:
    plan = RoutePlan(ROUTE, ROUTE.chains["default"], "default")
    assert fit_context(plan, 900) is plan
    fitted = fit_context(plan, 5_000)
    assert [t.model for t in fitted.chain.targets] == ["big"]
    with pytest.raises(CallerError) as err:
        fit_context(plan, 200_000)
    assert err.value.kind is ErrorKind.CONTEXT_TOO_LONG and err.value.status == 400


OPENAI = ProviderConfig("o", "openai", "https://api.openai.com/v1")
CLAUDE = ProviderConfig("a", "anthropic", "https://api.anthropic.com")
GPT = Target("gpt", resolved=ModelConfig("gpt", "o", "gpt-4o", 1.0, 1.0, resolved_provider=OPENAI))
SONNET = Target(
    "sonnet", resolved=ModelConfig("sonnet", "a", "claude", 1.0, 1.0, resolved_provider=CLAUDE)
)


def test_more_stop_sequences_than_openai_takes_skip_its_targets_or_are_a_400() -> None:
    """An Anthropic caller's stop_sequences have no limit; OpenAI takes 4: its targets are
    dropped from the chain (another provider's may serve), or the request is a 400 in the
    caller's terms (all of them went upstream and OpenAI refused the request)."""
    both = RouteConfig(name="r", chains={"default": Chain("default", (SONNET, GPT))})
    only = RouteConfig(name="o", chains={"default": Chain("default", (GPT,))})

    def ask(n: int) -> ChatRequest:
        body = {"model": "r", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "stop_sequences": [f"s{i}" for i in range(n)]}  # fmt: skip
        return DIALECTS["anthropic"].parse_request(orjson.dumps(body))

    plan = RoutePlan(both, both.chains["default"], "default")
    assert fit_stops(plan, ask(4)) is plan
    assert [t.model for t in fit_stops(plan, ask(6)).chain.targets] == ["sonnet"]
    with pytest.raises(CallerError) as err:
        fit_stops(RoutePlan(only, only.chains["default"], "default"), ask(6))
    assert err.value.status == 400 and err.value.param == "stop_sequences"
    assert "6 stop sequences" in err.value.message and "at most 4" in err.value.message


def test_an_image_in_a_tool_result_reaches_anthropic_targets_only() -> None:
    """OpenAI's tool message holds text: a tool_result's screenshot was dropped without a
    word for an OpenAI target. Its targets leave the chain, or the request is a 400."""
    both = RouteConfig(name="r", chains={"default": Chain("default", (GPT, SONNET))})
    only = RouteConfig(name="o", chains={"default": Chain("default", (GPT,))})

    def ask(*inner: dict[str, object]) -> ChatRequest:
        messages = [
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": list(inner)}]},
        ]  # fmt: skip
        body = {"model": "r", "max_tokens": 5, "messages": messages}
        return DIALECTS["anthropic"].parse_request(orjson.dumps(body))

    text = {"type": "text", "text": "here it is"}
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    plan = RoutePlan(both, both.chains["default"], "default")
    assert fit_tool_images(plan, ask(text)) is plan
    assert [t.model for t in fit_tool_images(plan, ask(text, image)).chain.targets] == ["sonnet"]
    with pytest.raises(CallerError) as err:
        fit_tool_images(RoutePlan(only, only.chains["default"], "default"), ask(text, image))
    assert err.value.status == 400 and "tool_result" in err.value.message
