"""Map a request's values (plan, race, meters, usage, outcome) onto its trace spans.

The spans themselves live in :mod:`trioproxy.telemetry.tracing`; this module only
knows which gateway value becomes which attribute. Every function is a no-op for a
request without a trace (tracing off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio

from trioproxy.config.model import ModelConfig
from trioproxy.core.types import Completion, Usage
from trioproxy.errors import GatewayError
from trioproxy.pipeline.accounting import bill_for
from trioproxy.pipeline.routing import RoutePlan
from trioproxy.telemetry.tracing import (
    AttrValue,
    RequestTrace,
    Tracing,
    provider_name,
    usage_attributes,
)
from trioproxy.upstream.attempt import Meter
from trioproxy.upstream.race import Attempt, AttemptFailed, Race

AttemptHook = Callable[[Attempt], tuple[tuple[str, str], ...]]


def start(
    tracing: Tracing, operation: str, model: str, headers: Mapping[bytes, bytes],
    plan: RoutePlan, request_id: str, extra: Mapping[str, AttrValue] | None = None,
) -> RequestTrace | None:  # fmt: skip
    attrs: dict[str, AttrValue] = {
        "trioproxy.request_id": request_id,
        "trioproxy.route": plan.route.name,
        "trioproxy.chain": plan.chain.name,
        "trioproxy.chain.reason": plan.reason,
        "trioproxy.chain.targets": [t.model for t in plan.chain.targets],
        **(extra or {}),
    }
    return tracing.request(operation, model, headers, attrs)


def attempt_hook(trace: RequestTrace | None) -> AttemptHook | None:
    """Starts an attempt's span at launch; returns its ``traceparent`` for the upstream."""
    if trace is None:
        return None

    def hook(attempt: Attempt) -> tuple[tuple[str, str], ...]:
        spec = attempt.target.spec
        provider = spec.endpoint
        return trace.start_attempt(attempt.index, spec.deployment, {
            "gen_ai.provider.name": provider_name(provider.kind, provider.name),
            "trioproxy.provider": provider.name,
            "trioproxy.target": attempt.target.model,
            "trioproxy.attempt.role": attempt.role,
            "trioproxy.attempt.depth": attempt.depth,
            **_server(provider.base_url),
        })  # fmt: skip

    return hook


def _server(base_url: str) -> dict[str, AttrValue]:
    url = urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return {"server.address": url.hostname or "", "server.port": port}


def _response(meter: Meter | None) -> dict[str, AttrValue]:
    if meter is None:
        return {}
    out: dict[str, AttrValue] = {}
    if meter.response_id:
        out["gen_ai.response.id"] = meter.response_id
    if meter.response_model:
        out["gen_ai.response.model"] = meter.response_model
    if meter.finish is not None:
        out["gen_ai.response.finish_reasons"] = [meter.finish]
    return out


def _end_wall(a: Attempt) -> float:
    end = a.ended_at if a.ended_at is not None else trio.current_time()
    return a.wall_started_at + (end - a.started_at)


def finish(
    trace: RequestTrace | None, race: Race,
    consumed: Sequence[tuple[Attempt, ModelConfig, Usage]], meters: Mapping[int, Meter],
    *, status: int, error: GatewayError | None, cache: str, prompt: Any = None,
    answer: Completion | None = None,
) -> None:  # fmt: skip
    """End every attempt span, then the request span, with usage, cost and outcome."""
    if trace is None:
        return
    total_micros = 0
    for a, model, usage in consumed:
        micros = bill_for(model, usage).micros
        total_micros += micros
        cost = micros / 1_000_000
        err = a.error
        trace.end_attempt(a.index, {
            **usage_attributes(usage), **_response(meters.get(a.index)),
            "trioproxy.attempt.outcome": a.outcome, "trioproxy.cost_usd": cost,
            **({"http.response.status_code": err.status} if isinstance(err, AttemptFailed)
               and err.status else {}),
        }, error=err.kind.value if err is not None else None, end_wall_s=_end_wall(a))  # fmt: skip
    attrs: dict[str, AttrValue] = {
        "trioproxy.cache": cache, "trioproxy.cost_usd": total_micros / 1_000_000,
        "trioproxy.attempts": len(race.attempts), "http.response.status_code": status,
    }  # fmt: skip
    winner = race.winner
    if winner is not None:
        won = next((c for c in consumed if c[0] is winner), None)
        provider = winner.target.spec.endpoint
        attrs["gen_ai.provider.name"] = provider_name(provider.kind, provider.name)
        attrs["trioproxy.target"] = winner.target.model
        attrs.update(_response(meters.get(winner.index)))
        if won is not None:
            attrs.update(usage_attributes(won[2]))
    _prompts(trace, attrs, prompt, answer)
    final = error or (race.error() if winner is None and race.attempts else None)
    trace.end(attrs, error=final.kind.value if final is not None else None)


def finish_early(
    trace: RequestTrace | None, *, status: int, cache: str, error: GatewayError | None = None,
    saved_micros: int | None = None,
) -> None:  # fmt: skip
    """End a request that never went upstream: a cache hit, or refused (budget, limit)."""
    if trace is None:
        return
    attrs: dict[str, AttrValue] = {"trioproxy.cache": cache, "http.response.status_code": status,
                                   "trioproxy.cost_usd": 0.0, "trioproxy.attempts": 0}  # fmt: skip
    if saved_micros is not None:
        attrs["trioproxy.saved_usd"] = saved_micros / 1_000_000
    trace.end(attrs, error=error.kind.value if error is not None else None)


def _prompts(trace: RequestTrace, attrs: dict[str, AttrValue], prompt: Any,
             answer: Completion | None) -> None:  # fmt: skip
    if not trace.log_prompts:
        return
    if prompt is not None:
        attrs["gen_ai.input.messages"] = orjson.dumps(prompt).decode()
    if answer is not None:
        parts: list[dict[str, Any]] = [{"type": "text", "content": answer.text}]
        parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
                  for c in answer.tool_calls]  # fmt: skip
        message = {"role": "assistant", "parts": parts, "finish_reason": answer.finish_reason}
        attrs["gen_ai.output.messages"] = orjson.dumps([message]).decode()


__all__ = ["AttemptHook", "attempt_hook", "finish", "finish_early", "start"]
