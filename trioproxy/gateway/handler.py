"""The chat request pipeline, for both client dialects.

auth → parse → route/chain → [budget reserve] → [cache] → race of attempts →
relay to the client → [settle] → usage records. Each step's logic lives in
its own module; this one only orders them and owns the request's nursery:
the race (producer) and the client writer (consumer) meet at a bounded
channel, and a watcher cancels both when the client disconnects.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import trio

from trioproxy.budget.gate import Ticket
from trioproxy.config.model import ApiKeyConfig, Settings
from trioproxy.core.routing import RoutePlan, route_for, select_chain
from trioproxy.core.tokens import prompt_tokens
from trioproxy.core.types import ChatRequest, Dialect, Priority
from trioproxy.dialects import DIALECTS
from trioproxy.errors import CallerError, ErrorKind, GatewayError, PolicyError, invalid
from trioproxy.gateway.accounting import RequestFacts, refused_record, spent, usage_records
from trioproxy.gateway.admission import Admission
from trioproxy.gateway.asgi_io import (
    SSE_HEADERS,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    send_whole,
    watch_disconnect,
)
from trioproxy.gateway.attempt import AttemptRunner, Failed, Item, Won
from trioproxy.gateway.auth import KeyRing, may_use
from trioproxy.gateway.race import Breakers, Race
from trioproxy.gateway.upstream import Transport
from trioproxy.ledger.record import UsageSink

SETTLE_TIMEOUT_S = 5.0
"""Bound on the shielded budget settle after a request ends (the lease covers a miss)."""

_PRIORITIES: dict[bytes, Priority] = {b"low": "low", b"medium": "medium", b"high": "high"}


@dataclass(slots=True)
class Outcome:
    status: int = 0
    error: GatewayError | None = None
    client_gone: list[bool] = field(default_factory=list)
    responded: bool = False
    """The whole response was handed to the server (a later disconnect is normal)."""

    @property
    def gone_early(self) -> bool:
        return bool(self.client_gone) and not self.responded


class ChatHandler:
    def __init__(
        self,
        settings: Settings,
        keys: KeyRing,
        transport: Transport,
        breakers: Breakers,
        sink: UsageSink,
        admission: Admission | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.transport = transport
        self.breakers = breakers
        self.sink = sink
        self.admission = admission
        self.in_flight = 0

    async def __call__(self, dialect: Dialect, scope: Scope, receive: Receive, send: Send) -> None:
        rid = "req_" + uuid.uuid4().hex[:24]
        headers = dict(scope["headers"])
        base: Headers = [(b"x-request-id", rid.encode())]
        if self.in_flight >= self.settings.server.max_in_flight:
            err = PolicyError(
                ErrorKind.OVERLOADED, "The gateway is at capacity; retry shortly.", retry_after=1
            )
            await self._send_error(send, dialect, err, base)
            return
        self.in_flight += 1
        try:
            try:
                key = self.keys.authenticate(headers)
                body = await read_body(receive, headers, self.settings.server.max_body_bytes)
                req = DIALECTS[dialect].parse_request(body)
                plan, prompt_est = self._plan(key, req, headers)
            except ClientGone:
                return
            except GatewayError as err:
                await self._send_error(send, dialect, err, base)
                return
            feature = headers.get(b"x-trioproxy-feature", b"").decode("latin-1") or key.feature
            facts = RequestFacts(
                request_id=rid,
                key=key,
                feature=feature,
                req=req,
                plan=plan,
                prompt_estimate=prompt_est,
                started=trio.current_time(),
                wall_started=time.time(),
            )
            base += [
                (b"x-trioproxy-route", plan.route.name.encode()),
                (b"x-trioproxy-chain", plan.chain.name.encode()),
                (b"x-trioproxy-reason", plan.reason.encode()),
                (b"x-trioproxy-cache", b"off"),
            ]
            ticket: Ticket | None = None
            prompt_bound = 0
            if self.admission is not None:
                try:
                    ticket, prompt_bound = await self.admission.admit(facts)
                except GatewayError as err:
                    self.sink.submit(refused_record(facts, err))
                    await self._send_error(send, dialect, err, base)
                    return
            await self._serve(facts, dialect, receive, send, base, ticket, prompt_bound)
        finally:
            self.in_flight -= 1

    def _plan(
        self, key: ApiKeyConfig, req: ChatRequest, headers: dict[bytes, bytes]
    ) -> tuple[RoutePlan, int]:
        route = route_for(self.settings, req.model)
        if not may_use(key, route.name):
            raise CallerError(
                ErrorKind.ROUTE_FORBIDDEN,
                f"This API key may not use '{route.name}'.",
                param="model",
            )
        raw = headers.get(b"x-trioproxy-priority")
        if raw is None:
            priority = key.priority
        elif raw.lower() in _PRIORITIES:
            priority = _PRIORITIES[raw.lower()]
        else:
            raise invalid("x-trioproxy-priority must be low, medium or high.")
        messages = req.chat.get("messages", [])
        prompt_est = prompt_tokens(messages)
        max_out = req.max_tokens
        if max_out is None:
            max_out = max(
                self.settings.models[t.model].max_output_tokens
                for chain in route.chains.values()
                for t in chain.targets
            )
        return select_chain(
            route, priority=priority, prompt_tokens=prompt_est, max_tokens=max_out
        ), prompt_est

    async def _serve(
        self,
        facts: RequestFacts,
        dialect: Dialect,
        receive: Receive,
        send: Send,
        base: Headers,
        ticket: Ticket | None,
        prompt_bound: int,
    ) -> None:
        send_ch, recv_ch = trio.open_memory_channel[Item](self.settings.server.stream_buffer)
        runner = AttemptRunner(
            self.settings,
            self.transport,
            facts.req,
            facts.plan.route.fallback_statuses,
            send_ch,
            facts.request_id,
        )
        if ticket is not None and self.admission is not None:
            runner.on_progress = self.admission.progress(ticket, prompt_bound)
        race = Race(facts.plan.chain.targets, runner.run, self.breakers)
        outcome = Outcome()

        async def produce() -> None:
            async with send_ch:
                await race.run()
                if race.winner is None:
                    await send_ch.send(Failed(race.error()))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(
                    watch_disconnect, receive, nursery.cancel_scope, outcome.client_gone
                )
                async with recv_ch:
                    await self._respond(recv_ch, send, dialect, facts.req, race, outcome, base)
                nursery.cancel_scope.cancel()
        finally:
            if ticket is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(SETTLE_TIMEOUT_S):
                    await Admission.settle(
                        ticket,
                        [(m, u) for _, m, u in spent(facts, self.settings, race, runner.meters)],
                    )
            for record in usage_records(
                facts,
                self.settings,
                race,
                runner.meters,
                status=outcome.status,
                error=outcome.error,
                client_gone=outcome.gone_early,
            ):
                self.sink.submit(record)

    async def _respond(
        self,
        recv: trio.MemoryReceiveChannel[Item],
        send: Send,
        dialect: Dialect,
        req: ChatRequest,
        race: Race,
        outcome: Outcome,
        base: Headers,
    ) -> None:
        first = await recv.receive()
        if isinstance(first, Failed):
            outcome.status, outcome.error = first.error.status, first.error
            outcome.responded = True
            await self._send_error(send, dialect, first.error, base)
            return
        assert isinstance(first, Won)
        target = first.attempt.target.model
        headers = [
            *base,
            (b"x-trioproxy-target", target.encode()),
            (b"x-trioproxy-provider", self.settings.models[target].provider.encode()),
            (b"x-trioproxy-attempts", str(len(race.attempts)).encode()),
        ]
        outcome.status = 200
        codec = DIALECTS[dialect]
        if first.completion is not None:
            outcome.responded = True
            await send_whole(send, 200, codec.render_completion(first.completion, req), headers)
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]}
        )
        encoder = codec.new_stream_encoder(req)
        tail = b""
        async for item in recv:
            if isinstance(item, Failed):
                outcome.error = item.error
                tail = encoder.error(item.error)
                break
            assert not isinstance(item, Won)
            data = encoder.encode(item)
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        else:
            tail = encoder.finish()
        outcome.responded = True  # before the await: a disconnect may cancel us right after it
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _send_error(
        self, send: Send, dialect: Dialect, err: GatewayError, base: Headers
    ) -> None:
        headers = list(base)
        if err.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(err.retry_after))).encode()))
        await send_whole(send, err.status, DIALECTS[dialect].render_error(err), headers)


__all__ = ["ChatHandler"]
