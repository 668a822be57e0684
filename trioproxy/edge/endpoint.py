"""What every proxy endpoint (chat, embeddings) is built from, and the steps they share.

:class:`Endpoint` holds the request-path parts (settings, keys, transport, breakers,
sink, admission, cache, tracing, the worker's slots and interrupts) and runs the
steps that do not depend on what the endpoint serves: the intake and the last resort
(:meth:`Endpoint.serve`), the route a key may use (:func:`permitted_route`, also for
count_tokens), the request's context and trace, the cache step (:meth:`Endpoint.cached`),
budget admission with its rate-limit headers, the winner's headers, the race under the drain deadline
(:meth:`Endpoint.run_race`), and the accounting after it (records, the shielded settle).

The books of a request (``Endpoint._books``): once its context is made, the last resort can
see whether its request record went to the sink; when it did not, the last resort records
the 500 and settles the reservation, so a bug costs the caller nothing and leaves exactly one
record (and access line) behind. A routed request cancelled before its steps recorded it
(the drain's end in the cache lookup or admission) gets its one ``interrupted`` record and the
settle the same way (``Endpoint._abandoned``). A bug before routing is answered as a refusal
(the app's access line, no record: nothing was reserved).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import trio

from trioproxy.budget.ratelimit import after_admission, of_refusal
from trioproxy.config.model import ApiKeyConfig, ModelConfig, RouteConfig, Settings
from trioproxy.core.ids import request_id
from trioproxy.core.types import ChatRequest, Dialect, Usage
from trioproxy.dialects.ratelimit_headers import rate_limit_headers
from trioproxy.edge import traces
from trioproxy.edge.asgi_io import Headers, Receive, Scope, Send
from trioproxy.edge.auth import KeyRing, may_use
from trioproxy.edge.intake import Intake, Interrupts, shutting_down, slots_for
from trioproxy.edge.refusals import Refused, request_id_header
from trioproxy.edge.respond import ResponseGuard, internal_error, last_resort, send_error
from trioproxy.errors import CallerError, ErrorKind, GatewayError
from trioproxy.ledger.record import CacheStatus, UsageRecord, UsageSink
from trioproxy.pipeline.accounting import (
    failed_record,
    interrupted_record,
    refused_record,
    usage_records,
)
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import CachePlan, ResponseCache
from trioproxy.pipeline.context import HeaderPairs, RequestContext
from trioproxy.pipeline.features import FeatureCap
from trioproxy.pipeline.routing import RoutePlan, require_models, route_for
from trioproxy.pipeline.slots import Slots
from trioproxy.telemetry.tracing import Tracing
from trioproxy.upstream.race import Attempt, Breakers, Race
from trioproxy.upstream.transport import Transport

log = logging.getLogger(__name__)

Handle = Callable[
    [str, Dialect, ApiKeyConfig, dict[bytes, bytes], bytes, Receive, Send], Awaitable[None]
]
"""An endpoint's work once the intake let a request in: (request id, dialect, key, headers,
body, receive, send)."""

H = TypeVar("H")


def permitted_route(
    settings: Settings, key: ApiKeyConfig, model: str, *, embedding: bool
) -> RouteConfig:
    """The route ``model`` names, if ``key`` may use it and it serves this endpoint."""
    route = route_for(settings, model)
    if not may_use(key, route.name):
        raise CallerError(
            ErrorKind.ROUTE_FORBIDDEN, f"This API key may not use '{route.name}'.",
            param="model",
        )  # fmt: skip
    require_models(route, embedding=embedding)
    return route


def winner_headers(race: Race, winner: Attempt) -> Headers:
    """The headers that name the attempt whose answer the caller gets."""
    target = winner.target
    return [
        (b"x-trioproxy-target", target.model.encode()),
        (b"x-trioproxy-provider", target.spec.provider.encode()),
        (b"x-trioproxy-attempts", str(len(race.attempts)).encode()),
    ]


class Endpoint:
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
        interrupts: Interrupts | None = None,
        features: FeatureCap | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing()
        self.keys = keys
        self.transport = transport
        self.breakers = breakers
        self.sink = sink
        self.admission = admission
        self.cache = cache
        self.slots = slots or slots_for(settings)
        self.interrupts = interrupts or Interrupts()
        """The worker's running races and body reads, for the drain deadline."""
        self.intake = Intake(keys, self.slots, settings.server.max_body_bytes, self.interrupts)
        self._books: dict[str, RequestContext | None] = {}
        """Per request being served, once its context is made: its latest context (with the
        ticket) while its request record is not submitted, then None (for the last resort)."""
        self.features = FeatureCap() if features is None else features
        """The worker's (every endpoint's, across reloads: a team's hour is one)."""

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    async def serve(
        self, dialect: Dialect, scope: Scope, receive: Receive, send: Send, handle: Handle
    ) -> None:
        """The intake (key, slots, body), then ``handle``. A :class:`GatewayError` out of
        ``handle`` before routing (parse, route) is a refusal: raised as :class:`Refused` for
        the app to answer and record; after routing, before any response, it is answered as
        itself. Any other exception becomes a 500 in the caller's envelope naming the request
        id, logged once: before routing raised as a refusal too (its access line); once
        routed, unless the request's own steps recorded it, recorded by the last resort,
        which settles its reservation."""
        rid = request_id()  # the millisecond, then 80 random bits (time order: core/ids.py)
        first: HeaderPairs = (request_id_header(rid),)
        headers = dict(scope["headers"])
        guard = ResponseGuard(send, scope)
        async with self.intake(dialect, headers, receive, guard, first) as got:
            if got is not None:
                key, body = got
                try:
                    await handle(rid, dialect, key, headers, body, receive, guard)
                except GatewayError as err:
                    if guard.started:  # raised after its answer began: a bug
                        log.exception("request %s failed unexpectedly", rid)
                        await self._last_resort(rid, dialect, guard, first, internal_error(rid))
                    elif rid in self._books:  # routed: answered, recorded and settled here
                        await self._last_resort(rid, dialect, guard, first, err)
                    else:
                        raise Refused(err, dialect, first, key=key.name, team=key.team) from None
                except Exception:  # the last resort: a bug must not become a bare 500
                    log.exception("request %s failed unexpectedly", rid)
                    if not guard.started and rid not in self._books:  # before routing
                        raise Refused(internal_error(rid), dialect, first, key=key.name,
                                      team=key.team) from None  # fmt: skip
                    await self._last_resort(rid, dialect, guard, first, internal_error(rid))
                finally:
                    if (ctx := self._books.pop(rid, None)) is not None:  # cancelled meanwhile
                        await self._abandoned(ctx)

    async def _last_resort(
        self, rid: str, dialect: Dialect, guard: ResponseGuard, first: HeaderPairs,
        err: GatewayError,
    ) -> None:  # fmt: skip
        """A routed request failed outside the steps that answer and record it: ``err`` (a
        500 for a bug) or the end of the body begun, then, unless its request record was
        submitted, the record of the failure and the shielded settle."""
        await last_resort(guard, dialect, rid, first, err)
        ctx = self._books.get(rid)
        if ctx is None:
            return
        status = guard.status or err.status
        try:
            self.record(ctx, failed_record(ctx, err, status=status))
            traces.finish_early(ctx.trace, status=status, cache=ctx.cache_status, error=err)
        finally:
            await self._settle(ctx, ())

    async def _abandoned(self, ctx: RequestContext) -> None:
        """A routed request was cancelled (the drain's end, the server's) before its steps
        recorded it: its one record (``interrupted``), then the shielded settle."""
        try:
            self.sink.submit(interrupted_record(ctx))
        finally:
            await self._settle(ctx, ())

    async def run_race(
        self, ctx: RequestContext, race: Race, finishing: Callable[[], bool]
    ) -> GatewayError | None:
        """Run ``race`` where the drain deadline can end it (unless ``finishing()``: its
        answer is all but complete). None when it ended by itself with a winner; else what
        to tell the caller: a bug in the race (500 naming the request), the drain deadline
        (``gateway_shutting_down``), or every target failing."""
        live = self.interrupts.live
        with trio.CancelScope() as scope:
            live[scope] = finishing
            if self.interrupts.interrupting:
                scope.cancel()
            try:
                await race.run()
            except Exception:  # a bug in the race: told in the caller's dialect
                log.exception("request %s failed unexpectedly", ctx.request_id)
                return internal_error(ctx.request_id)
            finally:
                del live[scope]
        if scope.cancelled_caught:
            return shutting_down()
        if race.winner is None:
            return race.error()
        return None

    def route(self, key: ApiKeyConfig, model: str, *, embedding: bool) -> RouteConfig:
        """The route ``model`` names, if ``key`` may use it and it serves this endpoint."""
        return permitted_route(self.settings, key, model, embedding=embedding)

    def context(
        self, rid: str, dialect: Dialect, key: ApiKeyConfig, headers: dict[bytes, bytes],
        req: ChatRequest, plan: RoutePlan, prompt_estimate: int, *, endpoint: str,
        operation: str, extra: HeaderPairs = (), cache_ttl: int | None = None,
    ) -> RequestContext:  # fmt: skip
        """The request's context once it is parsed and routed; starts its trace (named
        ``operation``). From here on the request is in the books: the last resort records it
        if nothing else does; every record names ``endpoint``."""
        named = headers.get(b"x-trioproxy-feature", b"").decode("latin-1")[:128]
        feature = self.features.name(key.team, named, time.time()) if named else key.feature
        self._books[rid] = ctx = RequestContext(
            request_id=rid, dialect=dialect, key=key, feature=feature, req=req, plan=plan,
            prompt_estimate=prompt_estimate, started=trio.current_time(),
            wall_started=time.time(), endpoint=endpoint,
            headers=(
                request_id_header(rid),
                (b"x-trioproxy-route", plan.route.name.encode()),
                (b"x-trioproxy-chain", plan.chain.name.encode()),
                *extra,
            ),
            trace=traces.start(self.tracing, operation, req.model, headers, plan, rid),
            cache_ttl=cache_ttl,
        )  # fmt: skip
        return ctx

    def record(self, ctx: RequestContext, record: UsageRecord) -> None:
        """Submit the request record of ``ctx`` (out of the books first: submitted once)."""
        self._books[ctx.request_id] = None
        self.sink.submit(record)

    async def cached(
        self, ctx: RequestContext, headers: dict[bytes, bytes], send: Send,
        plan: Callable[[ResponseCache, bool], tuple[CachePlan | None, CacheStatus]],
        lookup: Callable[[ResponseCache, CachePlan], Awaitable[tuple[H | None, CachePlan]]],
        serve_hit: Callable[[RequestContext, Send, H], Awaitable[None]],
    ) -> RequestContext | None:  # fmt: skip
        """The cache step: ``plan(cache, bypass)`` (``x-trioproxy-cache: off`` bypasses),
        ``lookup(cache, plan)``; a hit is served (``serve_hit``) and None returned, else the
        context with the cache's plan (the lookup's, to store the answer with) and status."""
        if self.cache is None:
            return ctx.with_cache(None, "off")
        bypass = headers.get(b"x-trioproxy-cache", b"").lower() == b"off"
        cache_plan, status = plan(self.cache, bypass)
        if cache_plan is not None:
            hit, cache_plan = await lookup(self.cache, cache_plan)
            if hit is not None:
                await serve_hit(ctx, send, hit)
                return None
        return ctx.with_cache(cache_plan, status)

    async def admit(
        self, ctx: RequestContext, send: Send, *, prompt_bound: int | None = None,
        max_output: int | None = None,
    ) -> RequestContext | None:  # fmt: skip
        """Reserve the budget (when there is one): the context with the ticket and the
        rate-limit headers, or None once the refusal was sent and recorded."""
        if self.admission is None:
            return ctx
        try:
            ticket, bound = await self.admission.admit(
                ctx, prompt_bound=prompt_bound, max_output=max_output
            )
        except GatewayError as err:
            self.record(ctx, refused_record(ctx, err))
            traces.finish_early(ctx.trace, status=err.status, cache=ctx.cache_status, error=err)
            refused = rate_limit_headers(ctx.dialect, of_refusal(err), now=time.time())
            await send_error(send, ctx.dialect, err, [*ctx.headers, *refused])
            return None
        limits: HeaderPairs = ()
        if ticket.window_usage:
            state = after_admission(ticket)
            limits = tuple(rate_limit_headers(ctx.dialect, state, now=time.time()))
        self._books[ctx.request_id] = admitted = ctx.with_ticket(ticket, bound, limits)
        return admitted

    async def account(
        self, ctx: RequestContext, race: Race,
        consumed: Sequence[tuple[Attempt, ModelConfig, Usage]], intents: Iterable[int], *,
        status: int, error: GatewayError | None, client_gone: bool,
    ) -> None:  # fmt: skip
        """After the answer (or its failure): the usage records (they replace the
        provisional ``intents``), then the budget settle, shielded and bounded (settled even
        when the sink fails: a reservation is never left to its lease by a bug)."""
        self._books[ctx.request_id] = None
        billed: int | None = None
        try:
            records = usage_records(ctx, race, consumed, status=status, error=error,
                                    client_gone=client_gone)  # fmt: skip
            billed = records[-1].cost_micros  # the request's: every attempt's bill, summed
            self.sink.submit_all(records)  # journaled in one write
            for token in intents:
                self.sink.resolve(token)
        finally:
            await self._settle(ctx, consumed, billed)

    async def _settle(
        self, ctx: RequestContext, consumed: Sequence[tuple[Attempt, ModelConfig, Usage]],
        billed: int | None = None,
    ) -> None:  # fmt: skip
        """Settle the request's reservation (if any) to what ``consumed`` bills (``billed``:
        that bill when the request record has it already). Shielded and bounded, also in a
        cancelled request: by the gate (``BudgetGate.settle``: its store call's one scope
        is the shield and the timeout, no second scope here)."""
        if ctx.ticket is not None and self.admission is not None:
            await self.admission.settle(ctx.ticket, [(m, u) for _, m, u in consumed], billed=billed)


__all__ = [
    "Endpoint",
    "Handle",
    "permitted_route",
    "shutting_down",
    "winner_headers",
]
