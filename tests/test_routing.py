"""Chain selection and context fitting: pure, on config values."""

from __future__ import annotations

import pytest

from trioproxy.config.model import Chain, ModelConfig, RouteConfig, SelectRule, Target
from trioproxy.errors import CallerError, ErrorKind
from trioproxy.pipeline.routing import RoutePlan, fit_context, select_chain

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
