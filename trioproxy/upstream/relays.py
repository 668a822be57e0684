"""Relaying a won stream to the caller: the decoding relay and the verbatim one.

Mixed into :class:`~trioproxy.upstream.attempt.AttemptRunner`: once an attempt has claimed
the race and handed on its first items, one of these relays the rest of the upstream stream.

* :meth:`StreamRelays._relay` decodes every event into canonical values, meters them and
  hands them to the relay channel (the caller's encoder writes them);
* :meth:`StreamRelays._relay_verbatim` writes the upstream bytes as they are, cut at event
  boundaries (:mod:`trioproxy.providers.passthrough`), straight to the client connection.

Both keep the idle deadline with the run's watchdog (:mod:`.idle`), check a capped
reservation's budget after each event (``on_progress``), and end a broken stream with a
:class:`~trioproxy.upstream.items.Failed` item.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from trioproxy.core.sse import SSEParser
from trioproxy.core.types import StreamEvent, UsageReport
from trioproxy.errors import ErrorKind, GatewayError, ProviderError
from trioproxy.providers.base import StreamDecoder
from trioproxy.providers.passthrough import PassthroughTap, Tapped
from trioproxy.upstream.idle import IdleWatch, watched
from trioproxy.upstream.items import Failed, Outbox
from trioproxy.upstream.meter import Meter
from trioproxy.upstream.race import Attempt
from trioproxy.upstream.transport import UpstreamIOError, UpstreamResponse


class StreamRelays:
    """The relays of :class:`~trioproxy.upstream.attempt.AttemptRunner` (its fields below,
    declared here for the type checker: the runner's dataclass slots hold them; no slots of
    its own, so the runner keeps no ``__dict__``)."""

    __slots__ = ()
    out: Outbox
    on_progress: Callable[[Attempt, Meter], Awaitable[None]] | None
    prompt_estimate: int
    ended: bool
    end_written: bool
    verbatim_end: Callable[[], bytes]

    @staticmethod
    def _decode(chunk: bytes, parser: SSEParser, decoder: StreamDecoder) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for sse in parser.feed(chunk):
            out.extend(decoder.feed(sse))
        return out

    async def _relay(
        self,
        attempt: Attempt,
        resp: UpstreamResponse,
        parser: SSEParser,
        decoder: StreamDecoder,
        meter: Meter,
        idle: float,
    ) -> None:
        """The decoding relay: canonical events, metered (and budget-checked) one by one.

        The idle deadline is kept by the run's watchdog task, as in :meth:`_relay_verbatim`
        (not a timeout scope per chunk); handing events on (the relay channel, a slow client) and
        the budget check are not idleness.

        A stream that ends without a usable usage (an OpenAI-compatible server that ignores
        ``stream_options``, counts that are no counts) ends with the gateway's estimate as its
        usage: an Anthropic caller's ``message_delta``, an OpenAI caller's usage chunk, a
        Responses caller's ``response.completed`` say what the ledger bills, not 0 (a
        verbatim stream's too, an OpenAI one's in a usage chunk of the gateway's before
        ``[DONE]``: :attr:`~trioproxy.providers.passthrough.Tapped.finish`).
        """
        failure: GatewayError | None = None
        watch = IdleWatch(idle)
        with watched(watch):
            with watch.scope:
                while not decoder.done:
                    try:
                        chunk = await resp.receive()
                    except UpstreamIOError as exc:
                        failure = _interrupted(f"upstream connection broke: {exc}")
                        break
                    if not chunk:
                        if not self.ended:  # (after the finish: a whole answer, ended early)
                            failure = _interrupted(_CLOSED)
                        break
                    hidden = decoder.hidden_tokens
                    try:
                        events = self._decode(chunk, parser, decoder)
                    except ProviderError as exc:
                        failure = exc
                        break
                    except ValueError as exc:
                        failure = _interrupted(f"malformed upstream event: {exc}")
                        break
                    if meter.bad_usage is None:  # after content: metered by estimate
                        meter.bad_usage = decoder.bad_usage
                    watch.writing = True
                    failure = await self._hand_on(attempt, events, meter)
                    if (  # reasoning decodes to no event: checked by the chunk
                        failure is None and self.on_progress is not None and not self.ended
                        and decoder.hidden_tokens > hidden
                    ):  # fmt: skip
                        failure = await _checked(self.on_progress, attempt, meter)
                    watch.writing = False
                    if failure is not None:
                        break
                    watch.last = trio.current_time()
        if watch.scope.cancelled_caught:
            failure = _interrupted(f"idle timeout: no chunk for {idle:g}s")
        if failure is not None:
            await self.out.send(Failed(failure))
        elif meter.usage is None:  # none came, or none usable: the caller reads the estimate
            await self.out.send(UsageReport(meter.final(self.prompt_estimate)))

    async def _hand_on(
        self, attempt: Attempt, events: list[StreamEvent], meter: Meter
    ) -> GatewayError | None:
        """Meter and relay decoded events; the budget check's refusal, if any."""
        for event in events:
            meter.received_any = True
            meter.observe(event)
            await self.out.send(event)
            self.ended = meter.finish is not None  # type: ignore[misc]  # (the runner's slot)
            if self.on_progress is not None and not self.ended:  # after the finish: no cut
                failure = await _checked(self.on_progress, attempt, meter)
                if failure is not None:
                    return failure
        return None

    async def _relay_verbatim(
        self, attempt: Attempt, resp: UpstreamResponse, tap: PassthroughTap, meter: Meter,
        idle: float, write: Callable[[bytes], Awaitable[None]],
    ) -> None:  # fmt: skip
        """The passthrough relay: upstream bytes as they are, cut at event boundaries,
        written to the client by this task (``write``, from the :class:`Handoff`).

        With ``on_progress`` (a capped reservation), each event written is followed by the
        budget check, as on the decoding path (a read of several events is written one event
        at a time: :meth:`PassthroughTap.feed_events`): the event that crosses the budget is
        the stream's last, then the check's refusal ends it. The stream stays verbatim
        (Claude's thinking blocks and signatures, which the decoding path drops, go through).

        The idle deadline is kept by the run's watchdog task (:class:`_Watchdog`: it sleeps
        until the earliest last chunk's time + ``idle``; a deadline moved per chunk costs more
        than the rest of the loop); a write that waits on a slow client is not idleness: it
        counts from its end.
        """
        failure: GatewayError | None = None
        watch = IdleWatch(idle)
        receive, plain, now = resp.receive, tap.feed_plain, trio.current_time
        progress = self.on_progress
        done = tap.done
        with watched(watch):
            with watch.scope:
                while not done:
                    try:
                        chunk = await receive()
                    except UpstreamIOError as exc:
                        failure = _interrupted(f"upstream connection broke: {exc}")
                        break
                    if not chunk:
                        if not self.ended:
                            failure = _interrupted(_CLOSED)
                        elif end := self.verbatim_end():  # the end marker the body lacked
                            watch.writing = True
                            await write(end)
                            watch.writing = False
                            self.end_written = True  # type: ignore[misc]
                        break
                    if plain(chunk):  # one content event (the bulk): as it came, unparsed
                        meter.received_any = True  # (and neither the end nor the final event)
                        watch.writing = True
                        await write(chunk)
                        if progress is not None:
                            failure = await _checked(progress, attempt, meter)
                        watch.writing = False
                        watch.last = now()
                        if failure is not None:
                            break
                        continue
                    try:
                        if progress is None:
                            await self._forward(tap.feed(chunk), tap, meter, write, watch)
                        else:  # metered event by event: the crossing one is the last
                            for got in tap.feed_events(chunk):
                                await self._forward(got, tap, meter, write, watch)
                                if got.forward and not self.ended:  # after the finish: no cut
                                    watch.writing = True
                                    failure = await _checked(progress, attempt, meter)
                                    watch.writing = False
                                    if failure is not None:
                                        break
                    except ProviderError as exc:
                        failure = exc
                    except ValueError as exc:
                        failure = _interrupted(f"malformed upstream event: {exc}")
                    done = tap.done
                    watch.last = now()
                    if failure is not None:
                        break
        if watch.scope.cancelled_caught:
            failure = _interrupted(f"idle timeout: no chunk for {idle:g}s")
        if failure is not None:
            await self.out.send(Failed(failure))

    async def _forward(
        self, got: Tapped, tap: PassthroughTap, meter: Meter,
        write: Callable[[bytes], Awaitable[None]], watch: IdleWatch,
    ) -> None:  # fmt: skip
        """Meter what the tap took from a read and write what it forwards."""
        meter_tapped(meter, got, self.prompt_estimate)
        if meter.bad_usage is None:  # after content: metered by estimate
            meter.bad_usage = tap.bad_usage
        if got.forward:
            watch.writing = True
            await write(got.forward)
            watch.writing = False
            self.ended = meter.finish is not None  # type: ignore[misc]  # (the runner's slot)
            self.end_written = tap.done  # type: ignore[misc]
        if got.error is not None:  # after the events before it in the read
            raise got.error


async def _checked(
    progress: Callable[[Attempt, Meter], Awaitable[None]], attempt: Attempt, meter: Meter
) -> GatewayError | None:
    """The budget check after a relayed event: its refusal, if any."""
    try:
        await progress(attempt, meter)
    except GatewayError as exc:
        return exc
    return None


_CLOSED = "upstream closed the stream before its end"
"""A body that ended before the stream's final event. One that ends after it, without the
wire's end marker (``[DONE]``, ``message_stop``: some OpenAI-compatible servers leave it
out), is a whole answer: ended as the wire would."""


def _interrupted(message: str) -> ProviderError:
    return ProviderError(ErrorKind.STREAM_INTERRUPTED, message)


def meter_tapped(meter: Meter, got: Tapped, prompt_estimate: int) -> None:
    """Meter what the tap decoded; then a held final event whose usage was none or no usage
    (an Anthropic ``message_delta``, a Responses terminal event, OpenAI's ``[DONE]`` after a
    usage chunk) joins what is forwarded, with what the ledger bills (:meth:`Meter.final`), and
    the events after it in the read follow."""
    if got.content_events or got.events:
        meter.received_any = True
    for event in got.events:
        meter.observe(event)
    if got.finish is not None:
        got.forward += got.finish(meter.final(prompt_estimate))


__all__ = ["StreamRelays", "meter_tapped"]
