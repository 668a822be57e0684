"""The embeddings pipeline (``POST /v1/embeddings``).

auth → parse → route/chain (embedding models only) → exact cache → budget
reserve (bound from the input's bytes, no output) → race of attempts (the same
fallback and hedging as chat; an embedding answer is one JSON body, so the
first complete 2xx body wins) → answer → usage records → settle → cache store.

The steps it shares with chat live where chat's do: the intake, routing,
admission and accounting in :class:`~trioproxy.edge.endpoint.Endpoint`, the
upstream exchange in :mod:`trioproxy.upstream.exchange`, the exact cache in
:mod:`trioproxy.pipeline.caching`. An answer is read up to a bound derived from
the request (:func:`response_bound`); the drain deadline ends a request still
waiting for its answer with ``gateway_shutting_down``, as it does a chat stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import orjson

from trioproxy.config.model import ApiKeyConfig
from trioproxy.core import endpoints
from trioproxy.core.types import ChatRequest, Dialect, Usage
from trioproxy.dialects.embeddings import EmbeddingRequest, parse_request
from trioproxy.edge import traces
from trioproxy.edge.asgi_io import Receive, Scope, Send, send_whole
from trioproxy.edge.endpoint import Endpoint, winner_headers
from trioproxy.edge.respond import failure_of, send_error
from trioproxy.errors import ErrorKind, GatewayError
from trioproxy.pipeline.accounting import bill_for, cache_hit_record, intent_record
from trioproxy.pipeline.caching import CachePlan, ResponseCache
from trioproxy.pipeline.context import RequestContext
from trioproxy.pipeline.routing import chain_key, select_chain
from trioproxy.providers.base import error_message
from trioproxy.providers.openai_embeddings import EmbeddingResult, build_request, parse_response
from trioproxy.upstream.attempt import Meter
from trioproxy.upstream.exchange import Deadlines, fetch_whole
from trioproxy.upstream.race import Attempt, AttemptFailed, Race

log = logging.getLogger(__name__)

VALUE_BYTES = 32
"""Bytes one vector component may take in the answer: a JSON float of 17 significant
digits with its exponent, comma and a pretty-printer's indent (base64 takes 5.3)."""
VECTOR_OVERHEAD_BYTES = 128
"""Bytes around each vector: its object, ``index`` and ``embedding`` keys."""
ENVELOPE_BYTES = 64 * 1024
"""Bytes of the rest of the answer: ``object``, ``model``, ``usage``."""


def response_bound(ereq: EmbeddingRequest, max_dimensions: int) -> int:
    """The most bytes a provider's answer to ``ereq`` may take: every input's vector at
    the requested ``dimensions`` (else the model's ``max_dimensions``), as JSON floats."""
    asked = ereq.body.get("dimensions")
    dims = min(asked, max_dimensions) if isinstance(asked, int) else max_dimensions
    return ENVELOPE_BYTES + ereq.inputs * (VECTOR_OVERHEAD_BYTES + dims * VALUE_BYTES)


@dataclass(slots=True)
class _Exchange:
    """What the attempts of one request produced."""

    req: EmbeddingRequest
    used: dict[int, Usage] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)
    """Per attempt, what the provider answered (model, usage): for traces."""
    won: EmbeddingResult | None = None


def _encoded(result: EmbeddingResult) -> bytes:
    """An embeddings answer, from the provider or the cache, as the caller gets it (and,
    from the provider, as the cache stores it: serialised once)."""
    return orjson.dumps(result.body)


class EmbeddingsHandler(Endpoint):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve("openai", scope, receive, send, self._handle)

    async def _handle(
        self, rid: str, dialect: Dialect, key: ApiKeyConfig, headers: dict[bytes, bytes],
        body: bytes, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        # a GatewayError here (parse, route) is a refusal before routing: Endpoint.serve
        ereq = parse_request(body)
        route = self.route(key, ereq.model, embedding=True)
        plan = select_chain(
            route, priority=key.priority, prompt_tokens=ereq.prompt_estimate, max_tokens=0
        )
        req = ChatRequest(dialect, ereq.body, {"model": ereq.model}, ereq.model, False, False,
                          None, ereq.end_user)  # fmt: skip
        reason = ((b"x-trioproxy-reason", plan.reason.encode()),)
        ctx = self.context(rid, dialect, key, headers, req, plan, ereq.prompt_estimate,
                           endpoint=endpoints.EMBEDDINGS, operation="embeddings",
                           extra=reason)  # fmt: skip

        async def lookup(
            cache: ResponseCache, plan: CachePlan
        ) -> tuple[tuple[EmbeddingResult, str] | None, CachePlan]:
            found = await cache.lookup_embedding(plan)
            assert plan.key is not None
            return (None if found is None else (found, plan.key)), plan

        cached = await self.cached(
            ctx, headers, send,
            lambda cache, bypass: cache.plan_embedding(
                ereq.body, key.team, route, bypass=bypass, chain=chain_key(route, plan.chain.name)
            ),
            lookup, self._serve_hit,
        )  # fmt: skip
        if cached is None:
            return
        admitted = await self.admit(cached, send, prompt_bound=ereq.prompt_bound, max_output=0)
        if admitted is not None:
            await self._serve(admitted, ereq, send)

    async def _serve_hit(
        self, ctx: RequestContext, send: Send, found: tuple[EmbeddingResult, str]
    ) -> None:
        """A cached answer, with its entry's name (what ``/admin/api/cache/delete`` takes)."""
        hit, entry_ref = found
        await send_whole(send, 200, _encoded(hit), [
            *ctx.headers, (b"x-trioproxy-cache", b"exact"), (b"x-trioproxy-target", b"cache"),
            (b"x-trioproxy-cache-entry", entry_ref.encode()),
        ])  # fmt: skip
        first = ctx.plan.chain.targets[0].spec
        saved = bill_for(first, Usage(hit.input_tokens, 0)).micros
        self.record(ctx, cache_hit_record(ctx, "exact", saved_micros=saved))
        traces.finish_early(ctx.trace, status=200, cache="exact", saved_micros=saved)

    async def _serve(self, ctx: RequestContext, ereq: EmbeddingRequest, send: Send) -> None:
        ex = _Exchange(ereq)
        intents: list[int] = []

        async def run(attempt: Attempt, claim: Callable[[Attempt], bool]) -> None:
            intents.append(self.sink.intend(intent_record(ctx, attempt)))  # see handler.py
            await self._attempt(ctx, ex, attempt, claim)

        race = Race(ctx.plan.chain.targets, run, self.breakers)
        error: GatewayError | None = None
        status = 0
        answer = b""
        try:
            error = await self.run_race(ctx, race, lambda: ex.won is not None)
            if ex.won is not None:  # an answer in hand is sent, even at the drain deadline
                error = None
            if error is not None:
                status = error.status
                await send_error(send, ctx.dialect, error, ctx.headers)
            else:
                assert race.winner is not None and ex.won is not None
                status = 200
                answer = _encoded(ex.won)
                headers = [*ctx.headers, *winner_headers(race, race.winner)]
                await send_whole(send, 200, answer, headers)
        except Exception as exc:  # a bug: recorded as what Endpoint.serve's last resort answers
            status, error = failure_of(ctx.request_id, send, exc)
            raise
        finally:
            # the cache first (it only queues): the caller may ask again before the settle
            consumed = [
                (a, a.target.spec, ex.used.get(a.index, Usage(0, 0))) for a in race.attempts
            ]
            try:
                if ctx.cache_plan is not None and self.cache is not None and error is None:
                    if ex.won is not None:
                        self.cache.store_embedding(
                            ctx.cache_plan, ex.won, answer or _encoded(ex.won)
                        )
            finally:  # a cache that fails must not skip the records and the settle
                await self.account(ctx, race, consumed, intents, status=status, error=error,
                                   client_gone=False)  # fmt: skip
            traces.finish(ctx.trace, race, consumed, ex.meters, status=status, error=error,
                          cache=ctx.cache_status)  # fmt: skip

    async def _attempt(
        self, ctx: RequestContext, ex: _Exchange, attempt: Attempt,
        claim: Callable[[Attempt], bool],
    ) -> None:  # fmt: skip
        model = attempt.target.spec
        provider = model.endpoint
        key = provider.api_key.reveal() if provider.api_key is not None else None
        upreq = build_request(ex.req.body, model.deployment, key)
        upreq = replace(upreq, headers=(*upreq.headers, ("x-client-request-id", ctx.request_id)))
        if (hook := traces.attempt_hook(ctx.trace)) is not None:
            upreq = replace(upreq, headers=(*upreq.headers, *hook(attempt)))
        t = attempt.target.timeouts
        body = b""
        deadlines = Deadlines(t)
        with deadlines.scope:
            body = await fetch_whole(
                self.transport, provider, upreq, deadlines, ctx.plan.route.fallback_statuses,
                error_message, response_bound(ex.req, model.max_dimensions),
            )  # fmt: skip
        if deadlines.scope.cancelled_caught:
            raise deadlines.timeout()
        try:
            result = parse_response(body, estimate=ex.req.prompt_estimate)
        except ValueError as exc:
            raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"bad body: {exc}") from exc
        ex.used[attempt.index] = usage = Usage(result.input_tokens, 0, estimated=result.estimated)
        ex.meters[attempt.index] = Meter(usage=usage, received_any=True,
                                         response_model=str(result.body.get("model", "")))  # fmt: skip
        if claim(attempt):
            ex.won = result


__all__ = ["EmbeddingsHandler", "response_bound"]
