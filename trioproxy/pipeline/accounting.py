"""Turn a finished request into usage records: one per attempt, one for the request.

The request record's cost is the sum of its attempts' costs (a hedged loser
that got as far as producing tokens is paid for too); reports sum request
records, never both kinds. Tokens come from the provider's usage fields; when
a stream broke or the client left before them, from what was received,
marked ``estimated``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import trio

from trioproxy.config.model import ModelConfig, Target
from trioproxy.config.pricing import prices_of
from trioproxy.core.billing import NO_BILL, Bill, bill
from trioproxy.core.types import Usage
from trioproxy.errors import ErrorKind, GatewayError
from trioproxy.ledger.record import CacheStatus, HedgeRole, Outcome, UsageRecord
from trioproxy.pipeline.context import RequestContext
from trioproxy.upstream.attempt import Meter
from trioproxy.upstream.race import Attempt, AttemptFailed, Race


def identity(ctx: RequestContext) -> dict[str, Any]:
    """The fields every record of a request shares: who asked, for what, along which route."""
    key, req = ctx.key, ctx.req
    return {
        "request_id": ctx.request_id, "key_name": key.name, "team": key.team,
        "user": key.user, "feature": ctx.feature, "route": ctx.plan.route.name,
        "end_user": req.end_user, "chain": ctx.plan.chain.name, "stream": req.stream,
        "endpoint": ctx.endpoint,
    }  # fmt: skip


def bill_for(model: ModelConfig, usage: Usage) -> Bill:
    """The one billing step on ``model``'s prices: budgets settle it, the ledger stores it,
    the cache stores it."""
    return bill(usage, prices_of(model))


def spent(
    ctx: RequestContext, race: Race, meters: Mapping[int, Meter]
) -> list[tuple[Attempt, ModelConfig, Usage]]:
    """What each attempt consumed (losers that received nothing consumed nothing)."""
    return [
        (
            a,
            a.target.spec,
            meters.get(a.index, Meter()).final(ctx.prompt_estimate),
        )
        for a in race.attempts
    ]


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 3)


def _attempt_outcome(a: Attempt) -> Outcome:
    return {"won": "won", "lost": "lost", "failed": "failed", "rejected": "error"}.get(
        a.outcome, "cancelled"
    )  # type: ignore[return-value]


def _record(
    ctx: RequestContext, ts: float, kind: Literal["request", "attempt"], target: str | None,
    model: ModelConfig | None, usage: Usage, cost: Bill, latency_ms: float,
    ttfb_ms: float | None, cache: CacheStatus, status: int, error_kind: str | None,
    depth: int, attempt: int, role: HedgeRole | None, outcome: Outcome,
) -> UsageRecord:  # fmt: skip
    """One record of ``ctx``'s request, its fields by position in :class:`UsageRecord`'s
    order (a keyword call of its 34 fields, with the identity and token fields merged in from
    dicts, costs ~60 % more; three records per request; ``tests/test_accounting_records.py``
    gives every field a distinct value and checks it lands under its name): who and which
    route from ``ctx``, the tokens from ``usage``, the money from ``cost``."""
    key, req, plan = ctx.key, ctx.req, ctx.plan
    return UsageRecord(
        ts, ctx.request_id, kind, key.name, key.team, key.user, ctx.feature, plan.route.name,
        ctx.endpoint, req.end_user, plan.chain.name, target,
        None if model is None else model.provider, None if model is None else model.deployment,
        usage.input_tokens, usage.output_tokens, usage.estimated, usage.cache_read_tokens,
        usage.cache_write_5m_tokens, usage.cache_write_1h_tokens, usage.reasoning_tokens,
        cost.micros, 0, cost.cache_savings_micros, latency_ms, ttfb_ms, cache, status,
        error_kind, depth, attempt, role, outcome, req.stream,
    )  # fmt: skip


_NO_USAGE = Usage(0, 0)


def usage_records(
    ctx: RequestContext,
    race: Race,
    consumed: Sequence[tuple[Attempt, ModelConfig, Usage]],
    *,
    status: int,
    error: GatewayError | None,
    client_gone: bool,
) -> list[UsageRecord]:
    """The request's final records: one per attempt (in launch order), then the request's."""
    now = trio.current_time()
    total = NO_BILL
    out: list[UsageRecord] = []
    for a, model, usage in consumed:
        cost = bill_for(model, usage)
        total += cost
        err = a.error
        attempt_status = (
            (err.status or 502) if isinstance(err, AttemptFailed)
            else err.status if isinstance(err, GatewayError)
            else status or 499
        )  # fmt: skip
        out.append(_record(
            ctx, a.wall_started_at, "attempt", a.target.model, model, usage, cost,
            _ms(a.started_at, a.ended_at or now) or 0.0, _ms(a.started_at, a.first_byte_at),
            "off", attempt_status, err.kind.value if err is not None else None, a.depth,
            a.index, a.role, _attempt_outcome(a),
        ))  # fmt: skip
    winner = race.winner
    won = next((c for c in consumed if c[0] is winner), None)
    final_error = error or (race.error() if winner is None and race.attempts else None)
    if client_gone:
        error_kind: str | None = "client_disconnected"
    else:
        error_kind = final_error.kind.value if final_error else None
    outcome: Outcome = (
        "interrupted"
        if final_error is not None and final_error.kind is ErrorKind.SHUTTING_DOWN
        else "served"
        if winner and final_error is None and not client_gone
        else "error"
    )
    out.append(_record(
        ctx, ctx.wall_started, "request", winner.target.model if winner else None,
        won[1] if won else None, won[2] if won else _NO_USAGE, total,
        _ms(ctx.started, now) or 0.0,
        _ms(ctx.started, winner.first_byte_at) if winner else None, ctx.cache_status,
        499 if client_gone else status, error_kind, winner.depth if winner else 0, 0,
        winner.role if winner else None, outcome,
    ))  # fmt: skip
    return out


def intent_record(ctx: RequestContext, a: Attempt, usage: Usage | None = None) -> UsageRecord:
    """The provisional record of attempt ``a``, journaled before its upstream call: it stands
    (outcome ``interrupted``, the prompt estimate billed, or ``usage``: a running stream's
    progress, :mod:`trioproxy.pipeline.progress`) if the process dies before the request's
    records are submitted."""
    model = a.target.spec
    if usage is None:
        usage = Usage(ctx.prompt_estimate, 0, True)
    return _record(
        ctx, a.wall_started_at, "attempt", a.target.model, model, usage,
        bill_for(model, usage), 0.0, None, "off", 0, "interrupted", a.depth, a.index, a.role,
        "interrupted",
    )  # fmt: skip


def refused_record(ctx: RequestContext, err: GatewayError) -> UsageRecord:
    """The record of a request refused before any attempt (budget, rate limit, overload)."""
    return _unserved(ctx, err.kind.value, err.status, "denied")


def failed_record(ctx: RequestContext, err: GatewayError, *, status: int) -> UsageRecord:
    """The record of a routed request that failed before its steps recorded it (a bug: the
    last resort's 500, or ``status`` when the head was out), nothing consumed upstream."""
    return _unserved(ctx, err.kind.value, status, "error")


def interrupted_record(ctx: RequestContext) -> UsageRecord:
    """The record of a routed request cancelled before its steps recorded it (the drain's end
    met it in the cache lookup or admission): nothing consumed upstream, no answer sent; as
    the journal's recovery records an interrupted request (status 0)."""
    return _unserved(ctx, "interrupted", 0, "interrupted")


def _unserved(ctx: RequestContext, error_kind: str, status: int, outcome: Outcome) -> UsageRecord:
    return UsageRecord(
        ts=ctx.wall_started,
        kind="request",
        **identity(ctx),
        latency_ms=_ms(ctx.started, trio.current_time()) or 0.0,
        status=status,
        error_kind=error_kind,
        outcome=outcome,
        cache=ctx.cache_status,
    )


def count_record(
    ctx: RequestContext, target: Target | None, *, status: int, failure: GatewayError | None
) -> UsageRecord:
    """A token count (``/v1/messages/count_tokens``): free upstream, so $0 and no tokens
    (nothing a budget counts); ``target`` answered it (None: the gateway's estimate),
    ``failure`` is what the provider did instead (its 4xx relayed with ``status``, or why
    the caller got an estimate)."""
    model = target.spec if target is not None else None
    return UsageRecord(
        ts=ctx.wall_started, kind="request", **identity(ctx),
        target=target.model if target is not None else None,
        provider=model.provider if model is not None else None,
        provider_model=model.deployment if model is not None else None,
        latency_ms=_ms(ctx.started, trio.current_time()) or 0.0, status=status,
        error_kind=failure.kind.value if failure is not None else None,
        outcome="served" if status == 200 else "error",
    )  # fmt: skip


def cache_hit_record(
    ctx: RequestContext, kind: Literal["exact", "semantic"], *, saved_micros: int
) -> UsageRecord:
    """A request answered from the cache: nothing consumed upstream, ``saved_micros`` saved."""
    return UsageRecord(
        ts=ctx.wall_started, kind="request", target="cache", **identity(ctx),
        latency_ms=_ms(ctx.started, trio.current_time()) or 0.0, cache=kind,
        saved_micros=saved_micros, status=200, outcome="served",
    )  # fmt: skip


__all__ = [
    "bill_for",
    "cache_hit_record",
    "count_record",
    "failed_record",
    "intent_record",
    "interrupted_record",
    "refused_record",
    "spent",
    "usage_records",
]
