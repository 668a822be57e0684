"""One upstream attempt: request a target, wait for its first byte, relay it.

Runs inside :class:`~trioproxy.upstream.race.Race`. Each of the four timeouts
of a target is its own named ``trio`` scope:

* ``connect``: handed to the transport (opening the TCP/TLS connection);
* ``first_byte``: from the start until the status line and, for streams, the
  first decoded event; for non-stream requests until the status line;
* ``idle``: the longest silence between two upstream stream chunks;
* ``total``: the whole attempt, relay included.

Before the first byte every failure raises :class:`AttemptFailed` (fall
through) or a provider :class:`~trioproxy.errors.ProviderError` for a caller
fault (stop). After it, the attempt has claimed the race and the caller's
response has started, so a failure is sent down the channel as
:class:`Failed` and the client sees an explicit error event.

A provider's usage that is no usage (:class:`~trioproxy.core.usage.MalformedUsage`) fails
the attempt before its first byte; after it (a stream's usage comes after its content) the
stream goes on and ends without it, the attempt metered by estimate (:attr:`Meter.bad_usage`).

Items are pushed into a bounded channel: a slow client blocks ``send`` and so
the upstream read; memory stays flat. What follows the first items (the decoding relay, the
verbatim one) is :mod:`trioproxy.upstream.relays`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace

from trioproxy.config.model import ModelConfig, ProviderConfig
from trioproxy.core.sse import SSEParser
from trioproxy.core.tokens import estimate_tokens
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    Usage,
    UsageReport,
)
from trioproxy.core.usage import MalformedUsage
from trioproxy.errors import ErrorKind, GatewayError, ProviderError
from trioproxy.providers.base import ProviderAdapter, StreamDecoder
from trioproxy.providers.passthrough import PassthroughTap
from trioproxy.providers.registry import adapter_for
from trioproxy.upstream.exchange import (
    Deadlines,
    fetch_whole,
    first_byte_timeout,
    open_response,
)
from trioproxy.upstream.items import Failed, Handoff, Item, Outbox, Raw, Whole, Won
from trioproxy.upstream.meter import Meter
from trioproxy.upstream.race import Attempt, AttemptFailed
from trioproxy.upstream.relays import StreamRelays, meter_tapped
from trioproxy.upstream.transport import Transport, UpstreamIOError, UpstreamResponse

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""Bound on a non-stream chat answer's body."""


@dataclass(slots=True)
class AttemptRunner(StreamRelays):
    """Runs attempts for one request; its ``run`` is the race's attempt function."""

    transport: Transport
    req: ChatRequest
    fallback_statuses: frozenset[int]
    out: Outbox
    request_id: str = ""
    """Sent upstream as ``x-client-request-id`` for tracing across both sides."""
    on_attempt: Callable[[Attempt], tuple[tuple[str, str], ...]] | None = None
    """Called as an attempt starts; returns extra upstream headers (a trace's ``traceparent``)."""
    on_progress: Callable[[Attempt, Meter], Awaitable[None]] | None = None
    """Called by the winner after each upstream event (budget metering); a
    ``GatewayError`` from it ends the stream with that error."""
    passthrough: bool = False
    """Relay same-wire streams verbatim (:mod:`trioproxy.providers.passthrough`). The
    handler sets it only when nothing needs every event decoded (no stream caching);
    per-chunk budget metering (``on_progress``) reads the verbatim stream's meter."""
    prompt_estimate: int = 0
    """The gateway's estimate of the prompt's tokens: what a decoded stream's caller reads
    as its input usage when the provider reported none (the ledger bills the same,
    :meth:`Meter.final`)."""
    meters: dict[int, Meter] = field(default_factory=dict)
    winner: Meter | None = None
    """The meter of the attempt that claimed the race."""
    ended: bool = False
    """The winner's final event (its finish reason) is in the relay channel, or in what a
    verbatim winner writes to the client itself (:class:`Handoff`): only the stream's tail
    (usage, the end marker) may still be missing."""
    verbatim: bool = False
    """The winner relays verbatim (its own events end its stream)."""
    verbatim_ending: Callable[[Usage | None], bytes] | None = None
    """When the winner relays verbatim: its tap's
    :meth:`~trioproxy.providers.passthrough.PassthroughTap.end_events` (:meth:`verbatim_end`)."""
    end_written: bool = False
    """A verbatim winner's end event (``[DONE]``, ``message_stop``, ``response.completed``)
    is written to the client: the caller has the whole stream, even if the upstream's body
    has not ended yet (a client that leaves now is not a disconnect)."""

    def missing_usage(self) -> UsageReport | None:
        """For a decoded stream cut after :attr:`ended` (the drain deadline) before a usable
        usage came: the estimate the ledger bills, for the caller's last event (as
        :meth:`_relay` ends a stream that came without one)."""
        m = self.winner
        if m is None or m.usage is not None or not self.ended or self.verbatim:
            return None
        return UsageReport(m.final(self.prompt_estimate))

    def verbatim_end(self) -> bytes:
        """For a verbatim stream cut after :attr:`ended` (the drain deadline): what ends it as
        its wire would (``[DONE]``, ``message_stop``; nothing for the Responses wire, whose
        final event is its end), after an OpenAI caller's usage chunk with what the ledger
        bills when it asked for usage and none went through (as :meth:`missing_usage` for a
        decoded stream). Nothing once the end is written."""
        m = self.winner
        if self.verbatim_ending is None or m is None or self.end_written:
            return b""
        return self.verbatim_ending(None if m.usage is not None else m.final(self.prompt_estimate))

    async def run(self, attempt: Attempt, claim: Callable[[Attempt], bool]) -> None:
        model = attempt.target.spec
        provider = model.endpoint
        meter = self.meters[attempt.index] = Meter()
        t = attempt.target.timeouts
        claimed = False

        def claim_once(a: Attempt) -> bool:
            nonlocal claimed
            claimed = claim(a)
            if claimed:
                self.winner = meter
            return claimed

        deadlines = Deadlines(t)  # first byte, then total: one scope
        with deadlines.scope:
            await self._exchange(attempt, model, provider, meter, claim_once, deadlines)
        if deadlines.scope.cancelled_caught:
            if not claimed:
                raise deadlines.timeout()
            await self._fail_midstream(f"total timeout: {t.total:g}s")

    async def _exchange(
        self,
        attempt: Attempt,
        model: ModelConfig,
        provider: ProviderConfig,
        meter: Meter,
        claim: Callable[[Attempt], bool],
        deadlines: Deadlines,
    ) -> None:
        adapter = adapter_for(provider.kind, self.req.dialect)
        key = provider.api_key.reveal() if provider.api_key is not None else None
        upreq = adapter.build_request(
            self.req, model.deployment, key, provider.betas, model.max_output_tokens
        )
        if self.request_id:
            upreq = replace(
                upreq, headers=(*upreq.headers, ("x-client-request-id", self.request_id))
            )
        if self.on_attempt is not None:
            upreq = replace(upreq, headers=(*upreq.headers, *self.on_attempt(attempt)))
        t = attempt.target.timeouts
        if not self.req.stream:
            body = await fetch_whole(
                self.transport, provider, upreq, deadlines, self.fallback_statuses,
                adapter.error_message, MAX_RESPONSE_BYTES,
            )  # fmt: skip
            completion = _completion(body, adapter, meter)
            if completion.usage.estimated:  # the caller reads what the ledger bills
                completion = replace(completion, usage=meter.final(self.prompt_estimate))
            if claim(attempt):
                await self.out.send(Won(attempt, completion))
            return
        tap = (
            PassthroughTap(adapter.wire, include_usage=self.req.include_usage)
            if self.passthrough
            and adapter.wire == self.req.dialect
            and adapter.wire in PassthroughTap.WIRES
            else None
        )
        if tap is not None:
            meter.deferred = tap.output_tokens
        async with AsyncExitStack() as stack:
            decoder = adapter.new_stream_decoder()
            if tap is None:  # (the tap counts its own decoder's)
                meter.deferred = meter.hidden = lambda: decoder.hidden_tokens
            else:
                meter.hidden = tap.hidden_tokens
            parser = SSEParser()
            resp = await open_response(
                stack, self.transport, provider, upreq, t, self.fallback_statuses,
                adapter.error_message,
            )  # fmt: skip
            first = await self._first_items(resp, tap, parser, decoder, meter)
            deadlines.first_byte_in()  # the first event: from here on the total timeout
            if not deadlines.got_first_byte:  # it came as the first byte's deadline passed
                raise first_byte_timeout(t)
            if not claim(attempt):
                return
            ending = None
            if tap is not None and tap.wire == "responses":

                def ending(err: GatewayError, tap: PassthroughTap = tap) -> bytes:
                    return tap.failure_event(err, meter.final(self.prompt_estimate))

            await self.out.send(Won(attempt, passthrough=tap is not None, ending=ending))
            if tap is None:
                for item in first:
                    await self.out.send(item)
                self.ended = meter.finish is not None
                await self._relay(attempt, resp, parser, decoder, meter, t.idle)
                return
            self.verbatim, self.verbatim_ending = True, tap.end_events
            self.ended = meter.finish is not None
            handoff = Handoff()
            await self.out.send(handoff)
            await handoff.ready.wait()  # the head is written
            assert handoff.write is not None
            for item in first:  # by the winner, as the rest: it knows when its end is out
                assert isinstance(item, Raw)  # (the caller may leave then: no disconnect)
                await handoff.write(item.data)
            self.end_written = tap.done
            await self._relay_verbatim(attempt, resp, tap, meter, t.idle, handoff.write)

    async def _first_items(
        self, resp: UpstreamResponse, tap: PassthroughTap | None, parser: SSEParser,
        decoder: StreamDecoder, meter: Meter,
    ) -> list[Item]:  # fmt: skip
        """Read until the first event: what the attempt relays when it wins."""
        raw: list[bytes] = []
        try:
            while chunk := await resp.receive():
                if tap is not None:
                    got = tap.feed(chunk)
                    if got.error is not None:  # before anything was relayed: the attempt fails
                        raise got.error
                    _usable(meter, tap.bad_usage, whole=tap.done)
                    meter_tapped(meter, got, self.prompt_estimate)
                    if got.forward:
                        raw.append(got.forward)
                    if got.events or tap.done:
                        return [Raw(b"".join(raw))] if raw else []
                    continue
                events = self._decode(chunk, parser, decoder)
                _usable(meter, decoder.bad_usage, whole=decoder.done)
                for event in events:
                    meter.received_any = True
                    meter.observe(event)
                if events or decoder.done:
                    return list(events)
        except (UpstreamIOError, ValueError, ProviderError) as exc:
            raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"stream broke: {exc}") from exc
        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, "stream ended before any event")

    async def _fail_midstream(self, message: str) -> None:
        await self.out.send(Failed(ProviderError(ErrorKind.STREAM_INTERRUPTED, message)))


def _completion(body: bytes, adapter: ProviderAdapter, meter: Meter) -> Completion:
    try:
        completion = adapter.parse_response(body)
    except ValueError as exc:
        if isinstance(exc, MalformedUsage):
            meter.bad_usage = str(exc)
        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"bad body: {exc}") from exc
    meter.received_any = True
    if completion.bad_usage is not None:  # logged and counted, as after a stream's content
        meter.bad_usage = completion.bad_usage
    if completion.usage.estimated:  # the provider reported no usage: the prompt's estimate
        # and the whole answer's (Meter.final), as for a stream without usage; its estimate of
        # the text alone billed the prompt as 0 tokens, and a tool call as nothing at all
        # (its thinking too, as reasoning tokens, as a stream's: it was billed as nothing)
        hidden = estimate_tokens(completion.thinking) if completion.thinking else 0
        meter.output_estimate = (
            hidden
            + estimate_tokens(completion.text)
            + sum(
                estimate_tokens(c.name) + estimate_tokens(c.arguments)
                for c in completion.tool_calls
            )
        )
        meter.hidden = lambda: hidden
    else:
        meter.usage = completion.usage
    meter.response_id, meter.response_model = completion.id, completion.model
    meter.finish = completion.finish_reason
    return completion


def _usable(meter: Meter, bad_usage: str | None, *, whole: bool) -> None:
    """Before anything was relayed a malformed usage fails the attempt (the next target
    is tried), as a malformed first event does (nothing metered); after, the stream goes
    on without it (:mod:`trioproxy.core.usage`). Not asked once the whole stream came in the
    first reads: it is served with the estimate, as the same stream in more reads is (a
    Responses stream whose ``response.completed`` has no usage was a 502 when it came in
    one read, and served when it came in two)."""
    if bad_usage is not None and whole:
        meter.bad_usage = meter.bad_usage or bad_usage
    elif bad_usage is not None:
        meter.bad_usage = bad_usage
        raise AttemptFailed(ErrorKind.UPSTREAM_UNAVAILABLE, f"stream broke: {bad_usage}")


__all__ = ["AttemptRunner", "Failed", "Handoff", "Item", "Meter", "Outbox", "Raw", "Whole", "Won"]
