"""The chat request pipeline, for both client dialects.

auth → parse → route/chain → cache lookup → budget reserve → race of attempts
→ relay to the client → settle → cache store → usage records. Each step's
logic lives in its own module; this one only orders them and owns the
request's nursery: the race (producer) and the client writer (consumer) meet
at a bounded channel, and a watcher cancels both when the client disconnects.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import trio

from trioproxy.budget.ratelimit import after_admission, of_refusal
from trioproxy.config.model import ApiKeyConfig, Settings
from trioproxy.core.tokens import prompt_tokens
from trioproxy.core.types import ChatRequest, Dialect, Priority
from trioproxy.dialects import DIALECTS
from trioproxy.dialects.ratelimit_headers import rate_limit_headers
from trioproxy.edge import traces
from trioproxy.edge.asgi_io import (
    Headers,
    Receive,
    Scope,
    Send,
    watch_disconnect,
)
from trioproxy.edge.auth import KeyRing, may_use
from trioproxy.edge.intake import Intake, Interrupts, slots_for
from trioproxy.edge.respond import (
    Delivery,
    ResponseGuard,
    internal_error,
    last_resort,
    relay,
    replay,
    send_error,
)
from trioproxy.errors import CallerError, ErrorKind, GatewayError, invalid
from trioproxy.ledger.record import UsageSink
from trioproxy.pipeline.accounting import (
    bill_for,
    cache_hit_record,
    intent_record,
    refused_record,
    spent,
    usage_records,
)
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import (
    CacheHit,
    ResponseCache,
    StreamCollector,
    replay_events,
    take_cache_ttl,
)
from trioproxy.pipeline.context import HeaderPairs, RequestContext
from trioproxy.pipeline.routing import (
    RoutePlan,
    fit_context,
    require_models,
    route_for,
    select_chain,
)
from trioproxy.pipeline.slots import Slots
from trioproxy.telemetry.tracing import Tracing
from trioproxy.upstream.attempt import AttemptRunner, Failed, Item, Won
from trioproxy.upstream.race import Attempt, Breakers, Race
from trioproxy.upstream.transport import Transport

log = logging.getLogger(__name__)


def shutting_down() -> GatewayError:
    return GatewayError(
        ErrorKind.SHUTTING_DOWN, "The gateway is shutting down; the request was interrupted.",
        retry_after=1,
    )  # fmt: skip


SETTLE_TIMEOUT_S = 15.0
"""Bound on the shielded budget settle after a request ends (the lease covers a miss)."""

_PRIORITIES: dict[bytes, Priority] = {b"low": "low", b"medium": "medium", b"high": "high"}


def with_anthropic_headers(req: ChatRequest, headers: dict[bytes, bytes]) -> ChatRequest:
    """The caller's ``anthropic-version`` and ``anthropic-beta`` (comma-separated values), for
    an Anthropic provider to pass on (filtered by its allow/deny lists)."""
    version = headers.get(b"anthropic-version")
    beta = headers.get(b"anthropic-beta")
    if version is None and beta is None:
        return req
    betas = tuple(b.strip() for b in (beta or b"").decode("latin-1").split(",") if b.strip())
    return replace(
        req,
        anthropic_version=version.decode("latin-1").strip() if version else None,
        anthropic_beta=betas,
    )


class ChatHandler:
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
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing()
        self.keys = keys
        self.transport = transport
        self.breakers = breakers
        self.sink = sink
        self.admission = admission
        self.cache = cache
        self.open_streams = 0
        self._relays: set[trio.MemoryReceiveChannel[Item]] = set()
        """The relay channels of requests being served (their fill is a metric)."""
        self.slots = slots or slots_for(settings)
        self.intake = Intake(keys, self.slots, settings.server.max_body_bytes)
        self.interrupts = interrupts or Interrupts()

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    async def __call__(self, dialect: Dialect, scope: Scope, receive: Receive, send: Send) -> None:
        rid = "req_" + uuid.uuid4().hex[:24]
        first: HeaderPairs = ((b"x-request-id", rid.encode()),)
        headers = dict(scope["headers"])
        guard = ResponseGuard(send)
        async with self.intake(dialect, headers, receive, guard.send, first) as got:
            if got is not None:
                key, body = got
                try:
                    await self._handle(rid, dialect, key, headers, body, receive, guard.send)
                except Exception:  # the last resort: a bug must not become a bare 500
                    log.exception("request %s failed unexpectedly", rid)
                    await last_resort(guard, dialect, rid, first)

    async def _handle(
        self, rid: str, dialect: Dialect, key: ApiKeyConfig, headers: dict[bytes, bytes],
        body: bytes, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        ctx = await self._context(rid, dialect, key, headers, body, send)
        if ctx is None:
            return
        if self.cache is not None:
            bypass = headers.get(b"x-trioproxy-cache", b"").lower() == b"off"
            cache_plan, status = self.cache.plan(
                ctx.req, key.team, ctx.plan.route, bypass=bypass,
                ttl_override=ctx.cache_ttl, key_name=key.name,
            )  # fmt: skip
            if cache_plan is not None:
                hit, cache_plan = await self.cache.lookup(cache_plan, ctx.req)
                if hit is not None:
                    await self._serve_hit(ctx, send, hit)
                    return
            ctx = ctx.with_cache(cache_plan, status)
        else:
            ctx = ctx.with_cache(None, "off")
        if self.admission is not None:
            try:
                ticket, prompt_bound = await self.admission.admit(ctx)
            except GatewayError as err:
                self.sink.submit(refused_record(ctx, err))
                traces.finish_early(ctx.trace, status=err.status, cache=ctx.cache_status,
                                    error=err)  # fmt: skip
                refused = rate_limit_headers(dialect, of_refusal(err), now=time.time())
                await send_error(send, dialect, err, [*ctx.headers, *refused])
                return
            limits: HeaderPairs = ()
            if ticket.holds:
                state = await after_admission(self.admission.gate, ticket)
                limits = tuple(rate_limit_headers(dialect, state, now=time.time()))
            ctx = ctx.with_ticket(ticket, prompt_bound, limits)
        await self._serve(ctx, receive, send)

    async def _context(
        self, rid: str, dialect: Dialect, key: ApiKeyConfig, headers: dict[bytes, bytes],
        body: bytes, send: Send,
    ) -> RequestContext | None:  # fmt: skip
        """Parse and route the request: its context, or None once an error was sent."""
        try:
            req, ttl = take_cache_ttl(DIALECTS[dialect].parse_request(body))
            req = with_anthropic_headers(req, headers)
            plan, prompt_est = self._plan(key, req, headers)
        except GatewayError as err:
            await send_error(send, dialect, err, [(b"x-request-id", rid.encode())])
            return None
        feature = headers.get(b"x-trioproxy-feature", b"").decode("latin-1")[:128] or key.feature
        return RequestContext(
            request_id=rid, dialect=dialect, key=key, feature=feature, req=req, plan=plan,
            prompt_estimate=prompt_est, started=trio.current_time(), wall_started=time.time(),
            headers=(
                (b"x-request-id", rid.encode()),
                (b"x-trioproxy-route", plan.route.name.encode()),
                (b"x-trioproxy-chain", plan.chain.name.encode()),
                (b"x-trioproxy-reason", plan.reason.encode()),
            ),
            trace=traces.start(self.tracing, "chat", req.model, headers, plan, rid),
            cache_ttl=ttl,
        )  # fmt: skip

    def _plan(
        self, key: ApiKeyConfig, req: ChatRequest, headers: dict[bytes, bytes]
    ) -> tuple[RoutePlan, int]:
        route = route_for(self.settings, req.model)
        if not may_use(key, route.name):
            raise CallerError(
                ErrorKind.ROUTE_FORBIDDEN, f"This API key may not use '{route.name}'.",
                param="model",
            )  # fmt: skip
        require_models(route, embedding=False)
        raw = headers.get(b"x-trioproxy-priority")
        if raw is None:
            priority = key.priority
        elif raw.lower() in _PRIORITIES:
            priority = _PRIORITIES[raw.lower()]
        else:
            raise invalid("x-trioproxy-priority must be low, medium or high.")
        prompt_est = prompt_tokens(req.chat.get("messages", []))
        max_out = req.max_tokens
        if max_out is None:
            max_out = max(
                t.spec.max_output_tokens for chain in route.chains.values() for t in chain.targets
            )
        chosen = select_chain(
            route, priority=priority, prompt_tokens=prompt_est, max_tokens=max_out
        )
        return fit_context(chosen, prompt_est), prompt_est

    async def _serve_hit(self, ctx: RequestContext, send: Send, hit: CacheHit) -> None:
        completion = hit.entry.completion("cache-" + ctx.request_id)
        headers = [*ctx.headers, (b"x-trioproxy-cache", hit.kind.encode()),
                   (b"x-trioproxy-target", b"cache"),
                   (b"x-trioproxy-cache-entry", hit.entry_ref.encode())]  # fmt: skip
        if hit.similarity is not None:
            headers.append((b"x-trioproxy-cache-similarity", f"{hit.similarity:.4f}".encode()))
        await replay(send, ctx.dialect, ctx.req, completion, replay_events(completion), headers)
        saved = hit.entry.cost_micros
        self.sink.submit(cache_hit_record(ctx, hit.kind, saved_micros=saved))
        traces.finish_early(ctx.trace, status=200, cache=hit.kind, saved_micros=saved)

    def relay_buffered(self) -> int:
        """Events waiting in the relay channels of the requests being served."""
        return sum(ch.statistics().current_buffer_used for ch in self._relays)

    def _winner_headers(self, race: Race) -> Callable[[Won], Headers]:
        def headers(won: Won) -> Headers:
            target = won.attempt.target
            return [
                (b"x-trioproxy-target", target.model.encode()),
                (b"x-trioproxy-provider", target.spec.provider.encode()),
                (b"x-trioproxy-attempts", str(len(race.attempts)).encode()),
            ]

        return headers

    async def _serve(self, ctx: RequestContext, receive: Receive, send: Send) -> None:
        """Race the chain's targets and relay the winner to the client; then account."""
        req, trace, ticket = ctx.req, ctx.trace, ctx.ticket
        send_ch, recv_ch = trio.open_memory_channel[Item](self.settings.server.stream_buffer)
        runner = AttemptRunner(
            self.transport, req, ctx.plan.route.fallback_statuses, send_ch, ctx.request_id
        )
        runner.on_attempt = traces.attempt_hook(trace)
        if ticket is not None and self.admission is not None:
            runner.on_progress = self.admission.progress(ticket, ctx.prompt_bound)
        intents: list[int] = []

        async def run_journaled(attempt: Attempt, claim: Callable[[Attempt], bool]) -> None:
            intents.append(self.sink.intend(intent_record(ctx, attempt)))
            await runner.run(attempt, claim)

        race = Race(ctx.plan.chain.targets, run_journaled, self.breakers)
        delivery = Delivery()
        keep = ctx.cache_plan is not None or (trace is not None and trace.log_prompts)
        collector = StreamCollector() if keep and req.stream else None
        # same-wire streams go through verbatim unless something needs every event decoded
        runner.passthrough = runner.on_progress is None and collector is None

        def finishing() -> bool:  # the answer's last event is in: let it end by itself
            return any(m.finish is not None for m in runner.meters.values())

        async def produce() -> None:
            async with send_ch:
                live = self.interrupts.live
                with trio.CancelScope() as scope:
                    live[scope] = finishing
                    if self.interrupts.interrupting:
                        scope.cancel()
                    try:
                        await race.run()
                    except Exception:  # a bug in the race: told in the caller's dialect
                        log.exception("request %s failed unexpectedly", ctx.request_id)
                        await send_ch.send(Failed(internal_error(ctx.request_id)))
                        return
                    finally:
                        del live[scope]
                if scope.cancelled_caught:
                    await send_ch.send(Failed(shutting_down()))
                elif race.winner is None:
                    await send_ch.send(Failed(race.error()))

        self.open_streams += req.stream
        self._relays.add(recv_ch)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope, delivery)
                async with recv_ch:
                    await relay(recv_ch, send, ctx.dialect, req, delivery,
                                self._winner_headers(race), ctx.headers, collector)  # fmt: skip
                nursery.cancel_scope.cancel()
        finally:
            self.open_streams -= req.stream
            self._relays.discard(recv_ch)
            await self._finish(ctx, race, runner, delivery, intents)

    async def _finish(
        self, ctx: RequestContext, race: Race, runner: AttemptRunner, delivery: Delivery,
        intents: list[int],
    ) -> None:  # fmt: skip
        """After the answer (or its failure): records, the budget settle, the cache, the trace."""
        usage = spent(ctx, race, runner.meters)
        for record in usage_records(ctx, race, usage, status=delivery.status,
                                    error=delivery.error, client_gone=delivery.gone_early):  # fmt: skip
            self.sink.submit(record)
        for token in intents:  # the records above stand for these provisional ones
            self.sink.resolve(token)
        if ctx.ticket is not None and self.admission is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(SETTLE_TIMEOUT_S):
                await self.admission.settle(ctx.ticket, [(m, u) for _, m, u in usage])
        if (
            ctx.cache_plan is not None and self.cache is not None
            and delivery.completion is not None and delivery.error is None
            and race.winner is not None
        ):  # fmt: skip
            model = race.winner.target.spec
            self.cache.store(ctx.cache_plan, ctx.req, delivery.completion,
                             bill_for(model, delivery.completion.usage).micros)  # fmt: skip
        traces.finish(ctx.trace, race, usage, runner.meters, status=delivery.status,
                      error=delivery.error, cache=ctx.cache_status,
                      prompt=ctx.req.chat.get("messages"), answer=delivery.completion)  # fmt: skip


__all__ = ["ChatHandler"]
