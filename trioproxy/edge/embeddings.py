"""The embeddings pipeline (``POST /v1/embeddings``).

auth → parse → route/chain (embedding models only) → exact cache → budget
reserve (bound from the input's bytes, no output) → race of attempts (the same
fallback and hedging as chat; an embedding answer is one JSON body, so the
first complete 2xx body wins) → answer → settle → cache store → usage records.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace

import orjson
import psycopg
import trio

from trioproxy.cache.keys import embedding_key, tenant_scope
from trioproxy.config.model import ApiKeyConfig, ModelConfig, Settings
from trioproxy.core.types import ChatRequest, Usage
from trioproxy.dialects.embeddings import EmbeddingRequest, parse_request
from trioproxy.edge import traces
from trioproxy.edge.asgi_io import Receive, Scope, Send, send_whole
from trioproxy.edge.auth import KeyRing, may_use
from trioproxy.edge.intake import Intake, slots_for
from trioproxy.edge.respond import send_error
from trioproxy.errors import CallerError, ErrorKind, GatewayError, ProviderError
from trioproxy.ledger.record import CacheStatus, UsageSink
from trioproxy.pipeline.accounting import (
    bill_for,
    cache_hit_record,
    intent_record,
    refused_record,
    usage_records,
)
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import LOOKUP_TIMEOUT_S, ResponseCache
from trioproxy.pipeline.context import HeaderPairs, RequestContext
from trioproxy.pipeline.routing import RoutePlan, require_models, route_for, select_chain
from trioproxy.pipeline.slots import Slots
from trioproxy.providers.base import error_message
from trioproxy.providers.openai_embeddings import EmbeddingResult, build_request, parse_response
from trioproxy.store.resp import RedisError
from trioproxy.telemetry.tracing import RequestTrace, Tracing
from trioproxy.upstream.attempt import Meter, parse_retry_after
from trioproxy.upstream.race import Attempt, AttemptFailed, Breakers, Race
from trioproxy.upstream.transport import (
    ERROR_BODY_LIMIT,
    Transport,
    UpstreamIOError,
    UpstreamResponse,
)

log = logging.getLogger(__name__)
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
"""2048 inputs of 3072 floats as JSON text fit well below this."""
SETTLE_TIMEOUT_S = 15.0


@dataclass(slots=True)
class _Exchange:
    """What the attempts of one request produced."""

    req: EmbeddingRequest
    request_id: str
    used: dict[int, Usage] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)
    """Per attempt, what the provider answered (model, usage): for traces."""
    won: EmbeddingResult | None = None
    trace: RequestTrace | None = None


class EmbeddingsHandler:
    def __init__(
        self,
        settings: Settings,
        keys: KeyRing,
        transport: Transport,
        breakers: Breakers,
        sink: UsageSink,
        admission: Admission | None = None,
        cache: ResponseCache | None = None,
        tracing: Tracing | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.tracing = tracing or Tracing()
        self.settings = settings
        self.keys = keys
        self.transport = transport
        self.breakers = breakers
        self.sink = sink
        self.admission = admission
        self.cache = cache
        self.slots = slots or slots_for(settings)
        self.intake = Intake(keys, self.slots, settings.server.max_body_bytes)

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = "req_" + uuid.uuid4().hex[:24]
        first: HeaderPairs = ((b"x-request-id", rid.encode()),)
        headers = dict(scope["headers"])
        async with self.intake("openai", headers, receive, send, first) as got:
            if got is not None:
                key, body = got
                await self._handle(rid, key, headers, body, send)

    async def _handle(
        self, rid: str, key: ApiKeyConfig, headers: dict[bytes, bytes], body: bytes, send: Send
    ) -> None:
        try:
            ereq = parse_request(body)
            plan = self._plan(key, ereq)
        except GatewayError as err:
            await send_error(send, "openai", err, [(b"x-request-id", rid.encode())])
            return
        feature = headers.get(b"x-trioproxy-feature", b"").decode("latin-1")[:128] or key.feature
        req = ChatRequest("openai", ereq.body, {"model": ereq.model}, ereq.model, False, False,
                          None, ereq.end_user)  # fmt: skip
        ctx = RequestContext(
            request_id=rid, dialect="openai", key=key, feature=feature, req=req, plan=plan,
            prompt_estimate=ereq.prompt_estimate, started=trio.current_time(),
            wall_started=time.time(),
            headers=(
                (b"x-request-id", rid.encode()),
                (b"x-trioproxy-route", plan.route.name.encode()),
                (b"x-trioproxy-chain", plan.chain.name.encode()),
            ),
            trace=traces.start(self.tracing, "embeddings", ereq.model, headers, plan, rid),
        )  # fmt: skip
        cache_key = self._cache_key(key, ereq, plan, headers)
        status: CacheStatus = "off" if cache_key is None else "miss"
        if cache_key is not None and (hit := await self._lookup(cache_key)) is not None:
            await send_whole(send, 200, orjson.dumps(hit.body), [
                *ctx.headers, (b"x-trioproxy-cache", b"exact"), (b"x-trioproxy-target", b"cache")
            ])  # fmt: skip
            first = plan.chain.targets[0].spec
            saved = bill_for(first, Usage(hit.input_tokens, 0)).micros
            self.sink.submit(cache_hit_record(ctx, "exact", saved_micros=saved))
            traces.finish_early(ctx.trace, status=200, cache="exact", saved_micros=saved)
            return
        ctx = ctx.with_cache(None, status)
        if self.admission is not None:
            try:
                ticket, _ = await self.admission.admit(
                    ctx, prompt_bound=ereq.prompt_bound, max_output=0
                )
            except GatewayError as err:
                self.sink.submit(refused_record(ctx, err))
                traces.finish_early(ctx.trace, status=err.status, cache=status, error=err)
                await send_error(send, "openai", err, ctx.headers)
                return
            ctx = ctx.with_ticket(ticket, ereq.prompt_bound)
        await self._serve(ctx, ereq, send, cache_key)

    def _plan(self, key: ApiKeyConfig, ereq: EmbeddingRequest) -> RoutePlan:
        route = route_for(self.settings, ereq.model)
        if not may_use(key, route.name):
            raise CallerError(
                ErrorKind.ROUTE_FORBIDDEN, f"This API key may not use '{route.name}'.",
                param="model",
            )  # fmt: skip
        require_models(route, embedding=True)
        return select_chain(
            route, priority=key.priority, prompt_tokens=ereq.prompt_estimate, max_tokens=0
        )

    def _cache_key(
        self, key: ApiKeyConfig, ereq: EmbeddingRequest, plan: RoutePlan,
        headers: dict[bytes, bytes],
    ) -> str | None:  # fmt: skip
        cfg = plan.route.cache
        if self.cache is None or cfg.exact_ttl_s <= 0:
            return None
        if headers.get(b"x-trioproxy-cache", b"").lower() == b"off":
            return None
        return embedding_key(ereq.body, tenant_scope(key.team, cfg), plan.route.name)

    async def _lookup(self, cache_key: str) -> EmbeddingResult | None:
        """A stored answer, or None: a cache that is down, slow or holds garbage is a miss."""
        assert self.cache is not None
        raw: bytes | None = None
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            try:
                raw = await self.cache.exact.get(cache_key, now=self.cache.clock())
            except (RedisError, psycopg.Error, OSError) as exc:
                log.warning("embedding cache lookup failed, treated as a miss: %r", exc)
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
            return EmbeddingResult(entry["body"], int(entry["input_tokens"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    async def _serve(
        self, ctx: RequestContext, ereq: EmbeddingRequest, send: Send, cache_key: str | None
    ) -> None:
        ex = _Exchange(ereq, ctx.request_id, trace=ctx.trace)
        route = ctx.plan.route

        intents: list[int] = []

        async def run(attempt: Attempt, claim: Callable[[Attempt], bool]) -> None:
            intents.append(self.sink.intend(intent_record(ctx, attempt)))  # see handler.py
            await self._attempt(ex, route.fallback_statuses, attempt, claim)

        race = Race(ctx.plan.chain.targets, run, self.breakers)
        error: GatewayError | None = None
        status = 0
        try:
            await race.run()
            if race.winner is None or ex.won is None:
                error = race.error()
                status = error.status
                await send_error(send, "openai", error, ctx.headers)
            else:
                status = 200
                target = race.winner.target.model
                provider = race.winner.target.spec.provider
                headers = [*ctx.headers, (b"x-trioproxy-target", target.encode()),
                           (b"x-trioproxy-provider", provider.encode()),
                           (b"x-trioproxy-attempts", str(len(race.attempts)).encode())]  # fmt: skip
                await send_whole(send, 200, orjson.dumps(ex.won.body), headers)
        finally:
            consumed = [
                (a, a.target.spec, ex.used.get(a.index, Usage(0, 0))) for a in race.attempts
            ]
            for record in usage_records(ctx, race, consumed, status=status, error=error,
                                        client_gone=False):  # fmt: skip
                self.sink.submit(record)
            for token in intents:
                self.sink.resolve(token)
            if ctx.ticket is not None and self.admission is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(SETTLE_TIMEOUT_S):
                    await self.admission.settle(ctx.ticket, [(m, u) for _, m, u in consumed])
            if cache_key is not None and ex.won is not None and error is None:
                await self._store(cache_key, route.cache.exact_ttl_s, ex.won)
            traces.finish(ctx.trace, race, consumed, ex.meters, status=status, error=error,
                          cache=ctx.cache_status)  # fmt: skip

    async def _store(self, cache_key: str, ttl_s: int, won: EmbeddingResult) -> None:
        assert self.cache is not None
        with trio.CancelScope(shield=True), trio.move_on_after(LOOKUP_TIMEOUT_S):
            try:
                entry = orjson.dumps({"body": won.body, "input_tokens": won.input_tokens})
                await self.cache.exact.put(cache_key, entry, ttl_s=ttl_s, now=self.cache.clock())
            except (RedisError, psycopg.Error, OSError) as exc:
                log.warning("embedding cache store failed: %r", exc)

    async def _attempt(
        self, ex: _Exchange, fallback_statuses: frozenset[int], attempt: Attempt,
        claim: Callable[[Attempt], bool],
    ) -> None:  # fmt: skip
        model: ModelConfig = attempt.target.spec
        provider = model.endpoint
        key = provider.api_key.reveal() if provider.api_key is not None else None
        upreq = build_request(ex.req.body, model.deployment, key)
        upreq = replace(upreq, headers=(*upreq.headers, ("x-client-request-id", ex.request_id)))
        if (hook := traces.attempt_hook(ex.trace)) is not None:
            upreq = replace(upreq, headers=(*upreq.headers, *hook(attempt)))
        t = attempt.target.timeouts
        with trio.move_on_after(t.total) as total_scope:
            async with AsyncExitStack() as stack:
                with trio.move_on_after(t.first_byte) as first_byte_scope:
                    try:
                        resp = await stack.enter_async_context(
                            self.transport.open(provider, upreq, connect_timeout=t.connect)
                        )
                    except UpstreamIOError as exc:
                        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, str(exc)) from exc
                if first_byte_scope.cancelled_caught:
                    raise AttemptFailed(
                        ErrorKind.UPSTREAM_TIMEOUT, f"first byte timeout: {t.first_byte:g}s"
                    )
                if resp.status >= 400:
                    raise await _classify(resp, fallback_statuses)
                try:
                    body = await resp.read(MAX_RESPONSE_BYTES)
                except UpstreamIOError as exc:
                    raise AttemptFailed(
                        ErrorKind.UPSTREAM_UNAVAILABLE, f"body broke: {exc}"
                    ) from exc
        if total_scope.cancelled_caught:
            raise AttemptFailed(ErrorKind.UPSTREAM_TIMEOUT, f"total timeout: {t.total:g}s")
        try:
            result = parse_response(body, estimate=ex.req.prompt_estimate)
        except ValueError as exc:
            raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"bad body: {exc}") from exc
        ex.used[attempt.index] = usage = Usage(result.input_tokens, 0, estimated=result.estimated)
        ex.meters[attempt.index] = Meter(usage=usage, received_any=True,
                                         response_model=str(result.body.get("model", "")))  # fmt: skip
        if claim(attempt):
            ex.won = result


async def _classify(
    resp: UpstreamResponse, fallback_statuses: frozenset[int]
) -> AttemptFailed | ProviderError:
    status = resp.status
    try:
        body = await resp.read(ERROR_BODY_LIMIT)
    except UpstreamIOError:
        body = b""
    message = error_message(status, body)
    if status in fallback_statuses:
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        return AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"HTTP {status}: {message}",
                             status=status, retry_after=retry_after)  # fmt: skip
    return ProviderError(
        ErrorKind.UPSTREAM_REJECTED, f"The provider rejected the request: {message}",
        status=status if 400 <= status < 500 else 502,
    )  # fmt: skip


__all__ = ["EmbeddingsHandler"]
