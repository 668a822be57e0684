"""Which chain of targets serves a request: pure, from config data.

The request's ``model`` names a route or a model. A route picks one of its
chains by its rules (first match wins; seed 002's ``selectModel`` as data),
otherwise its ``default`` chain. A bare model is a one-target route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trioproxy.config.model import (
    Chain,
    RouteConfig,
    SelectRule,
    Settings,
    Target,
)
from trioproxy.core.types import ChatRequest, Priority
from trioproxy.dialects.anthropic import dropped_from_chat
from trioproxy.errors import CallerError, ErrorKind


@dataclass(frozen=True, slots=True)
class RoutePlan:
    route: RouteConfig
    chain: Chain
    reason: str


def route_for(settings: Settings, name: str) -> RouteConfig:
    route = settings.routes.get(name) or settings.model_routes.get(name)
    if route is not None:
        return route
    raise CallerError(
        ErrorKind.UNKNOWN_ROUTE,
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
    )


def chain_key(route: RouteConfig, chain: str) -> str:
    """What the response cache keys of the chain chosen: its name when ``route`` has several
    chains (each may answer with other models: a premium caller was served the answer of a
    cheaper chain), else nothing (a route's one chain: its keys stay as they were)."""
    return chain if len(route.chains) > 1 else ""


def require_models(route: RouteConfig, *, embedding: bool) -> None:
    """A 400 unless every model of ``route`` is an embedding model (``embedding``) or
    a chat model (not ``embedding``): the endpoint decides which kind may serve."""
    wrong = sorted(
        {t.model for c in route.chains.values() for t in c.targets if t.spec.embedding != embedding}
    )
    if wrong:
        need, kind, other = (
            ("an embedding", "chat", "/v1/chat/completions")
            if embedding
            else ("a chat", "embedding", "/v1/embeddings")
        )
        raise CallerError(
            ErrorKind.INVALID_REQUEST,
            f"'{route.name}' is not {need} model: its route serves the {kind} "
            f"model{'s' if len(wrong) > 1 else ''} {', '.join(wrong)}; use {other}.",
            param="model",
        )


def _matches(rule: SelectRule, priority: Priority, prompt_tokens: int, max_tokens: int) -> bool:
    if rule.priority is not None and priority not in rule.priority:
        return False
    if rule.max_prompt_tokens is not None and prompt_tokens > rule.max_prompt_tokens:
        return False
    if rule.min_prompt_tokens is not None and prompt_tokens < rule.min_prompt_tokens:
        return False
    return not (rule.max_output_tokens is not None and max_tokens > rule.max_output_tokens)


def select_chain(
    route: RouteConfig, *, priority: Priority, prompt_tokens: int, max_tokens: int
) -> RoutePlan:
    """``max_tokens`` is the requested output cap (the model's cap when absent)."""
    for rule in route.rules:
        if _matches(rule, priority, prompt_tokens, max_tokens):
            return RoutePlan(route, route.chains[rule.chain], rule.reason or f"rule:{rule.chain}")
    return RoutePlan(route, route.chains["default"], "default")


def fit_context(plan: RoutePlan, prompt_tokens: int) -> RoutePlan:
    """Drop targets whose context window cannot hold the prompt; none left is a 400.

    ``prompt_tokens`` is the estimate (it under-counts BPE tokens), so only prompts
    that surely do not fit are kept from a target; the provider judges the rest.
    """
    fits = tuple(t for t in plan.chain.targets if prompt_tokens <= t.spec.context_limit)
    return _narrowed(plan, fits, lambda: CallerError(
        ErrorKind.CONTEXT_TOO_LONG,
        f"The prompt (about {prompt_tokens} tokens) exceeds the context window of every "
        f"model of route '{plan.route.name}'.",
        param="messages",
    ))  # fmt: skip


def _narrowed(
    plan: RoutePlan, fits: tuple[Target, ...], refuse: Callable[[], CallerError]
) -> RoutePlan:
    """``plan`` with its chain narrowed to ``fits`` (itself when nothing was dropped); none
    left raises ``refuse()``."""
    if not fits:
        raise refuse()
    if len(fits) == len(plan.chain.targets):
        return plan
    return RoutePlan(plan.route, Chain(plan.chain.name, fits), plan.reason)


OPENAI_MAX_STOP = 4
"""The most stop sequences OpenAI's chat API takes (``stop``: "Up to 4 sequences")."""


def fit_stops(plan: RoutePlan, req: ChatRequest) -> RoutePlan:
    """Drop OpenAI targets when the request has more stop sequences than OpenAI takes (an
    Anthropic caller's ``stop_sequences`` has no such limit: all of them went upstream and
    OpenAI refused the request); none left is a 400 naming the limit."""
    stop = req.chat.get("stop")
    count = len(stop) if isinstance(stop, list) else 0
    if count <= OPENAI_MAX_STOP:
        return plan
    fits = tuple(t for t in plan.chain.targets if t.spec.endpoint.kind != "openai")
    return _narrowed(plan, fits, lambda: CallerError(
        ErrorKind.INVALID_REQUEST,
        f"This request has {count} stop sequences; the models of route "
        f"'{plan.route.name}' (OpenAI) take at most {OPENAI_MAX_STOP}.",
        param="stop_sequences" if req.dialect == "anthropic" else "stop",
    ))  # fmt: skip


def fit_tool_images(plan: RoutePlan, req: ChatRequest) -> RoutePlan:
    """Keep only Anthropic targets when an Anthropic caller's ``tool_result`` carries more
    than text (an image, a document): the chat form of OpenAI's wire has no place for it in
    a tool message, and it was dropped without a word (the model answered without seeing
    it); none left is a 400 saying so."""
    if req.dialect != "anthropic" or not _tool_result_media(req.body):
        return plan
    fits = tuple(t for t in plan.chain.targets if t.spec.endpoint.kind == "anthropic")
    return _narrowed(plan, fits, lambda: CallerError(
        ErrorKind.INVALID_REQUEST,
        "An image or document in a tool_result reaches Anthropic models only; the models "
        f"of route '{plan.route.name}' take a tool result's text alone.",
        param="messages",
    ))  # fmt: skip


def _tool_result_media(body: dict[str, Any]) -> bool:
    """A tool result's content beyond text (what :func:`dropped_from_chat` keeps of it, as
    lists; thinking blocks, which it also keeps, are dicts)."""
    return any(
        isinstance(b, dict) and b.get("type") != "text"
        for content in dropped_from_chat(body) if isinstance(content, list)
        for b in content
    )  # fmt: skip


__all__ = [
    "OPENAI_MAX_STOP",
    "RoutePlan",
    "chain_key",
    "fit_context",
    "fit_stops",
    "fit_tool_images",
    "require_models",
    "route_for",
    "select_chain",
]
