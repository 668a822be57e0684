"""The chat request pipeline, for every client dialect (OpenAI, Anthropic, Responses).

auth → parse → route/chain → cache lookup → budget reserve → race of attempts
→ relay to the client → usage records → settle → cache store. Each step's
logic lives in its own module (the steps shared with embeddings in
:mod:`trioproxy.edge.endpoint`); this one only orders them and owns the
request's nursery: the race (producer) and the client writer (consumer) meet
at a bounded channel, and a watcher cancels both when the client disconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import trio

from trioproxy.config.model import ApiKeyConfig
from trioproxy.core import endpoints
from trioproxy.core.answer import StreamCollector, replay_events
from trioproxy.core.tokens import prompt_tokens
from trioproxy.core.types import ChatRequest, Dialect, Priority
from trioproxy.dialects import DIALECTS
from trioproxy.edge import traces
from trioproxy.edge.asgi_io import (
    Receive,
    Scope,
    Send,
    watch_disconnect,
)
from trioproxy.edge.endpoint import Endpoint, winner_headers
from trioproxy.edge.respond import (
    Delivery,
    answer,
    failure_of,
    relay,
    replay,
    watched,
)
from trioproxy.errors import ErrorKind, invalid
from trioproxy.pipeline.accounting import (
    bill_for,
    cache_hit_record,
    intent_record,
    spent,
)
from trioproxy.pipeline.caching import CacheHit, take_cache_ttl
from trioproxy.pipeline.context import RequestContext
from trioproxy.pipeline.progress import StreamProgress
from trioproxy.pipeline.routing import (
    RoutePlan,
    chain_key,
    fit_context,
    fit_stops,
    fit_tool_images,
    select_chain,
)
from trioproxy.upstream.attempt import AttemptRunner, Failed, Item, Outbox, Raw, Whole
from trioproxy.upstream.race import Attempt, Race

log = logging.getLogger(__name__)


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


class ChatHandler(Endpoint):
    """``/v1/chat/completions``, ``/v1/messages``, ``/v1/responses``: one pipeline, the
    caller's dialect carried by the request's context."""

    on_bad_usage: Callable[[str], None] | None = None
    """Told the target of each attempt whose usage was malformed (the app's metric)."""

    def __init__(self, *args: Any, progress: StreamProgress | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = StreamProgress(self.sink) if progress is None else progress
        """The worker's streams being served, their provisional records kept up to date (the
        app's, across reloads; its ``run`` is a service of the worker's when the sink
        journals)."""

    def __call__(
        self, dialect: Dialect, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        return self.serve(dialect, scope, receive, send, self._handle)  # (no frame of its own)

    async def _handle(
        self, rid: str, dialect: Dialect, key: ApiKeyConfig, headers: dict[bytes, bytes],
        body: bytes, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        # a GatewayError here (parse, route) is a refusal before routing: Endpoint.serve
        req, ttl = take_cache_ttl(DIALECTS[dialect].parse_request(body))
        req = with_anthropic_headers(req, headers)
        plan, prompt_est = self._plan(key, req, headers)
        if chain := chain_key(plan.route, plan.chain.name):
            req = replace(req, chain=chain)
        reason = ((b"x-trioproxy-reason", plan.reason.encode()),)
        ctx = self.context(rid, dialect, key, headers, req, plan, prompt_est,
                           endpoint=endpoints.GENERATION[dialect], operation="chat",
                           extra=reason, cache_ttl=ttl)  # fmt: skip
        cached = await self.cached(
            ctx, headers, send,
            lambda cache, bypass: cache.plan(req, key.team, plan.route, bypass=bypass,
                                             ttl_override=ttl, key_name=key.name),
            lambda cache, cache_plan: cache.lookup(cache_plan, req),
            self._serve_hit,
        )  # fmt: skip
        if cached is None:
            return
        admitted = await self.admit(cached, send)
        if admitted is not None:
            await self._serve(admitted, receive, send)

    def _plan(
        self, key: ApiKeyConfig, req: ChatRequest, headers: dict[bytes, bytes]
    ) -> tuple[RoutePlan, int]:
        route = self.route(key, req.model, embedding=False)
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
        fitted = fit_tool_images(fit_stops(fit_context(chosen, prompt_est), req), req)
        return fitted, prompt_est

    async def _serve_hit(self, ctx: RequestContext, send: Send, hit: CacheHit) -> None:
        completion = hit.entry.completion("cache-" + ctx.request_id)
        headers = [*ctx.headers, (b"x-trioproxy-cache", hit.kind.encode()),
                   (b"x-trioproxy-target", b"cache"),
                   (b"x-trioproxy-cache-entry", hit.entry_ref.encode())]  # fmt: skip
        if hit.similarity is not None:
            headers.append((b"x-trioproxy-cache-similarity", f"{hit.similarity:.4f}".encode()))
        await replay(send, ctx.dialect, ctx.req, completion, replay_events(completion), headers)
        saved = hit.entry.cost_micros
        self.record(ctx, cache_hit_record(ctx, hit.kind, saved_micros=saved))
        traces.finish_early(ctx.trace, status=200, cache=hit.kind, saved_micros=saved)

    def _race(self, ctx: RequestContext, out: Outbox) -> tuple[AttemptRunner, Race, dict[int, int]]:
        """The request's attempt runner and race; each attempt's provisional record is
        journaled (its token kept by attempt index: a stream's progress replaces it) before
        it goes upstream."""
        runner = AttemptRunner(
            self.transport, ctx.req, ctx.plan.route.fallback_statuses, out, ctx.request_id
        )
        runner.on_attempt = traces.attempt_hook(ctx.trace)
        runner.prompt_estimate = ctx.prompt_estimate
        intents: dict[int, int] = {}

        async def run_journaled(attempt: Attempt, claim: Callable[[Attempt], bool]) -> None:
            intents[attempt.index] = self.sink.intend(intent_record(ctx, attempt))
            await runner.run(attempt, claim)

        return runner, Race(ctx.plan.chain.targets, run_journaled, self.breakers), intents

    async def _serve(self, ctx: RequestContext, receive: Receive, send: Send) -> None:
        """Race the chain's targets and relay the winner to the client; then account."""
        if not ctx.req.stream:
            await self._serve_whole(ctx, receive, send)
            return
        req, trace, ticket = ctx.req, ctx.trace, ctx.ticket
        send_ch, recv_ch = trio.open_memory_channel[Item](self.settings.server.stream_buffer)
        runner, race, intents = self._race(ctx, send_ch)
        if ticket is not None and self.admission is not None:
            runner.on_progress = self.admission.progress(ticket, ctx.prompt_bound)
        delivery = Delivery(end_written=lambda: runner.end_written)
        # same-wire streams go through verbatim unless the cache needs every event decoded; a
        # trace that logs answers takes what a decoded stream shows and never asks for decoding
        # (it dropped thinking blocks, streamed reasoning, n > 1 choices and log probabilities
        # from the caller's answer): a verbatim stream's span has the prompt, not the answer
        logged = trace is not None and trace.log_prompts
        keep = ctx.cache_plan is not None or logged
        collector = StreamCollector() if keep and req.stream else None
        runner.passthrough = ctx.cache_plan is None

        def finishing() -> bool:  # the answer's final event is out: let it end by itself
            return runner.ended

        async def produce() -> None:
            async with send_ch:
                error = await self.run_race(ctx, race, finishing)
                if error is None:
                    return
                if error.kind is not ErrorKind.SHUTTING_DOWN or not runner.ended:
                    await send_ch.send(Failed(error))
                elif runner.verbatim:  # cut after its final event: end it as it would (an
                    if end := runner.verbatim_end():  # OpenAI usage chunk: what is billed)
                        await send_ch.send(Raw(end))
                elif (usage := runner.missing_usage()) is not None:  # what the ledger bills
                    await send_ch.send(usage)
                # (a verbatim Responses stream's final event, response.completed, is its end:
                # nothing to add, its end event is empty)
                # (decoded streams: the relay's encoder ends them when the channel closes)

        watching = self.progress.watch(ctx, race, runner.meters, intents, recv_ch)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope, delivery)
                async with recv_ch:
                    await relay(recv_ch, send, ctx.dialect, req, delivery,
                                lambda won: winner_headers(race, won.attempt), ctx.headers,
                                collector)  # fmt: skip
                nursery.cancel_scope.cancel()
        except Exception as exc:  # a bug: recorded as what Endpoint.serve's last resort answers
            delivery.status, delivery.error = failure_of(ctx.request_id, send, exc)
            raise
        finally:
            self.progress.forget(watching)  # no update after the final records
            await self._finish(ctx, race, runner, delivery, intents)

    async def _serve_whole(self, ctx: RequestContext, receive: Receive, send: Send) -> None:
        """A non-stream request: the race runs in this task and its one item (the winner's
        completion, or a failure) is the response; the client leaving cancels it
        (:func:`~trioproxy.edge.respond.watched`). Then account, as for a stream."""
        box = Whole()
        runner, race, intents = self._race(ctx, box)
        delivery = Delivery()

        async def race_and_answer() -> None:
            error = await self.run_race(ctx, race, lambda: False)
            item = box.item if error is None else Failed(error)
            assert item is not None, "a winner without its answer"
            await answer(send, ctx.dialect, ctx.req, delivery, item,
                         lambda won: winner_headers(race, won.attempt), ctx.headers)  # fmt: skip

        try:
            await watched(race_and_answer, receive, send, delivery)
        except Exception as exc:  # a bug: recorded as what Endpoint.serve's last resort answers
            delivery.status, delivery.error = failure_of(ctx.request_id, send, exc)
            raise
        finally:
            await self._finish(ctx, race, runner, delivery, intents)

    async def _finish(
        self, ctx: RequestContext, race: Race, runner: AttemptRunner, delivery: Delivery,
        intents: dict[int, int],
    ) -> None:  # fmt: skip
        """After the answer (or its failure): the cache, records and settle, the trace. The
        cache first (it only queues): the caller has the answer, and may ask again at once,
        before the settle's store round trip is over."""
        usage = spent(ctx, race, runner.meters)
        self._bad_usage(ctx, race, runner)
        try:
            if (
                ctx.cache_plan is not None and self.cache is not None
                and delivery.completion is not None and delivery.error is None
                and race.winner is not None
            ):  # fmt: skip
                model = race.winner.target.spec
                self.cache.store(ctx.cache_plan, ctx.req, delivery.completion,
                                 bill_for(model, delivery.completion.usage).micros)  # fmt: skip
        finally:  # a cache that fails must not skip the records and the settle
            await self.account(ctx, race, usage, intents.values(), status=delivery.status,
                               error=delivery.error, client_gone=delivery.gone_early)  # fmt: skip
        traces.finish(ctx.trace, race, usage, runner.meters, status=delivery.status,
                      error=delivery.error, cache=ctx.cache_status,
                      prompt=ctx.req.chat.get("messages"), answer=delivery.completion)  # fmt: skip

    def _bad_usage(self, ctx: RequestContext, race: Race, runner: AttemptRunner) -> None:
        """Each attempt whose provider sent a usage that is no usage: a warning and a count
        (it is billed the gateway's estimate, its record marked ``estimated``)."""
        for a in race.attempts:
            meter = runner.meters.get(a.index)
            if meter is None or meter.bad_usage is None:
                continue
            target = a.target.model
            log.warning(
                "request %s: %s sent a malformed usage (%s); metered by the gateway's estimate",
                ctx.request_id, target, meter.bad_usage,
                extra={"fields": {"request_id": ctx.request_id, "target": target,
                                  "bad_usage": meter.bad_usage}},
            )  # fmt: skip
            if self.on_bad_usage is not None:
                self.on_bad_usage(target)


__all__ = ["ChatHandler"]
