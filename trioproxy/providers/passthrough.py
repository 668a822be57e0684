"""Reading a stream that is relayed as it is (caller dialect = provider wire). Pure.

When the caller speaks the provider's wire, the gateway forwards the upstream
SSE bytes unchanged, cut at event boundaries, instead of decoding every event
into canonical values and encoding it again. :class:`PassthroughTap` is fed
the upstream body bytes and returns, per call, the complete events to forward
and what the gateway must know from them:

* the *special* events are decoded by the provider's own stream decoder: the
  first event, usage, errors, the finish reason, the final event (``[DONE]`` /
  ``message_stop`` / ``response.completed``), tool calls, reasoning, anything unusual
  (so the decoder's checks and state hold);
* the *plain* content events (a text delta, the bulk of a stream: an OpenAI chunk, an
  Anthropic ``text_delta``, a Responses ``response.output_text.delta``) are recognised
  by their bytes (:mod:`~trioproxy.providers.plain_events`) and kept aside, not parsed: their tokens are counted only when
  someone asks (:meth:`PassthroughTap.output_tokens`: the provider reported no
  usage, so the gateway bills its estimate), with
  :func:`~trioproxy.core.tokens.estimate_tokens` exactly as the decoder path counts
  them, so an interrupted stream bills exactly what was delivered. What is kept
  aside is bounded (:data:`PENDING_MAX` bytes, then counted at once). No JSON per
  content event, no canonical events, no re-encoding. A content event that is not
  valid JSON is forwarded as it came (the caller's SDK sees what the provider
  sent) and counts no tokens.

Line ends are normalised to LF (CRLF / CR framing from OpenAI-compatible
servers becomes LF framing: the same events). An OpenAI usage-only chunk is
left out when the caller did not ask for usage (the gateway always asks
upstream), as the decoding path leaves it out. A usage whose counts are no counts
(:class:`~trioproxy.core.usage.MalformedUsage`) is not forwarded either, as the decoding
path ends a stream without one: an OpenAI usage-only chunk is left out, another chunk loses
its ``usage``; :attr:`PassthroughTap.bad_usage` says why. A final event that must carry the
stream's usage and has none, or no usage (an Anthropic ``message_delta``, a Responses terminal
event: :attr:`~trioproxy.providers.base.JsonEventDecoder.unbilled_ends`), is held back
(:attr:`Tapped.finish`) and written once the attempt has metered the rest, with the usage the
ledger bills (:meth:`~trioproxy.upstream.meter.Meter.final`: the gateway's estimate), as the
decoding path's encoder writes it (``anthropic_json`` / ``responses_json``;
:mod:`~trioproxy.providers.billed_usage_events`): what the decoding path's caller reads there
too. The tap counts nothing for it itself: the meter's
count is the one billed. The events after it in the same read (``message_stop``) follow it.
An OpenAI stream that ends (``[DONE]``) without a usable usage, its caller having asked for
one (``stream_options.include_usage``), gets the usage-only chunk it lacked the same way:
``[DONE]`` is held back and written after a chunk of the gateway's (``"choices": []``, the
stream's ``id``, ``created``, ``model`` and ``system_fingerprint`` from its first chunk, the
usage billed as ``openai_json`` writes it: the decoding path's usage chunk). A caller that did
not ask gets none, as before. A stream the gateway ends after its final event (a drain) ends
the same way (:meth:`PassthroughTap.end_events`).

The Responses wire (a ``POST /v1/responses`` caller on a Responses upstream): every
``response.*`` event goes through as the provider sent it (its ids, sequence numbers,
annotations, log probabilities, hosted-tool and MCP events, event types the decoder does not
model). Two events are the gateway's own, as on the decoding path:

* a terminal event (``response.completed`` / ``response.incomplete``) whose usage is no usage
  (none, or :class:`~trioproxy.core.usage.MalformedUsage`) is held back and written with the
  usage the ledger bills, as above;
* a stream the gateway ends (the upstream broke, a budget stopped it) ends with a
  ``response.failed`` / ``response.incomplete`` event of its own
  (:meth:`PassthroughTap.failure_event`) that continues the provider's stream: its response
  object (from ``response.created``), the next sequence number, the output items done so far
  and the open ones as ``incomplete`` with what they had (a message's text, a call's
  arguments), and the usage the ledger bills. The output items are kept for that, up to
  :data:`~trioproxy.providers.responses_trail.KEEP_BYTES` of JSON (then as their id, type
  and status: a hosted tool's item carries its output, images too); an open
  message's text is taken from the content events only when they are counted. Unlike the
  decoding path, the open items get no ``.done`` events of their own before it (the
  snapshot says they are incomplete): a known difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import orjson

from trioproxy.core.sse import MAX_EVENT_BYTES, SSEParser, event_bytes, json_event
from trioproxy.core.types import Dialect, StreamEvent, Usage, UsageReport
from trioproxy.errors import GatewayError, ProviderError
from trioproxy.providers.anthropic import AnthropicStreamDecoder
from trioproxy.providers.base import JsonEventDecoder
from trioproxy.providers.billed_usage_events import (
    delta_with_usage,
    then,
    usage_chunk,
    usage_then,
)
from trioproxy.providers.openai import OpenAIStreamDecoder
from trioproxy.providers.plain_events import (
    ANTHROPIC_DATA,
    EMPTY_CHOICES,
    OPENAI_DATA,
    RESPONSES_DATA,
    RESPONSES_TEXT_TYPE,
    anthropic_tokens,
    openai_tokens,
    plain_anthropic,
    plain_openai,
    plain_responses,
)
from trioproxy.providers.responses_trail import ResponsesTrail, with_usage

PENDING_MAX = 4 * 1024
"""Bytes of plain content events kept uncounted per stream before they are counted (~17
OpenAI chunks of ~230 bytes: an answer that short is never counted when the provider reports
usage; longer ones are counted in batches along the way, ~1.1-1.7 us per chunk counted).
16 KiB held up to ~20 KB of Python bytes per open stream: at 1,000 concurrent 54-event
streams the worker's peak RSS was 111 MB, with 4 KiB 96 MB, for ~+1 us of CPU per relayed
event (loadtest/README.md, "Peak RSS of the serve group at 1,000 streams")."""
_END_EVENTS: dict[Dialect, bytes] = {
    "openai": b"data: [DONE]\n\n",
    "anthropic": b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    "responses": b"",  # its final event (response.completed) is its end: nothing follows
}


@dataclass(slots=True)
class Tapped:
    forward: bytes = b""
    """Complete events to relay as they are (may be empty)."""
    events: list[StreamEvent] = field(default_factory=list)
    """What the special events decoded to (start, usage, end...)."""
    content_events: int = 0
    """Plain content events in ``forward`` (metered later: :meth:`PassthroughTap.output_tokens`)."""
    finish: Callable[[Usage], bytes] | None = None
    """A final event held back, its usage none or no usage (an Anthropic ``message_delta``, a
    Responses terminal event; OpenAI's ``[DONE]``, after a usage chunk of the gateway's): to
    be appended to ``forward`` with the usage the ledger bills
    (:meth:`~trioproxy.upstream.meter.Meter.final`), once the attempt metered ``events``; the
    events that came after it in the same read (``message_stop``) follow it there."""
    error: Exception | None = None
    """The read's events after those in ``forward`` ended in this (an upstream error event,
    garbage): raise it once ``forward`` is written (the events before it in the same read
    were dropped, yet billed and, on the Responses wire, named in the gateway's last event)."""


class PassthroughTap:
    """Per-stream state; ``feed`` returns an upstream error event
    (:class:`~trioproxy.errors.ProviderError`) or garbage (``ValueError``) as
    :attr:`Tapped.error`, after the events before it; ``feed_events`` raises them."""

    WIRES: frozenset[Dialect] = frozenset({"openai", "anthropic", "responses"})
    """The wires relayed verbatim."""

    def __init__(self, wire: Dialect, *, include_usage: bool) -> None:
        if wire not in self.WIRES:
            raise ValueError(f"no passthrough for the {wire!r} wire")
        self.wire = wire
        self._trail: ResponsesTrail | None = None
        """What a Responses stream's own ending needs (:meth:`failure_event`)."""
        self._decoder: JsonEventDecoder
        self._billed: Callable[[bytes, Usage], bytes]
        """A final event held back (:attr:`Tapped.finish`) with the usage the ledger bills."""
        if wire == "openai":
            chunks = OpenAIStreamDecoder()
            self._decoder, self._plain = chunks, plain_openai
            self._billed = partial(usage_then, chunks)
        elif wire == "anthropic":
            self._decoder, self._plain = AnthropicStreamDecoder(), plain_anthropic
            self._billed = delta_with_usage
        else:
            self._decoder = self._trail = ResponsesTrail()
            self._plain, self._billed = plain_responses, with_usage
        self._parser = SSEParser()
        self._drop_usage = wire == "openai" and not include_usage
        self._rest: list[bytes] = []
        """The pieces of an event not ended yet (no blank line among them, LF framed)."""
        self._rest_size = 0
        self._cr = False
        """The previous input ended in CR (a CRLF may be split across reads)."""
        self._first = True
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._counted = 0
        self._hidden = 0
        """Of ``_counted``: streamed reasoning (``reasoning_content`` chunks)."""

    @property
    def done(self) -> bool:
        return self._decoder.done

    @property
    def bad_usage(self) -> str | None:
        """Why the provider's usage was left out as malformed, once it was."""
        return self._decoder.bad_usage

    def end_events(self, billed: Usage | None) -> bytes:
        """The wire's own last event (``[DONE]`` / ``message_stop``), for a stream the
        gateway has to end itself after the final event went through (a drain). An OpenAI
        caller that asked for usage gets the usage-only chunk before it when ``billed`` (what
        the ledger bills; None: the provider's usage chunk went through), as at a ``[DONE]``
        without usage. Empty for the Responses wire: its final event (``response.completed``
        / ``.incomplete``) is its last, nothing follows it."""
        end = _END_EVENTS[self.wire]
        if billed is None or self._drop_usage or not isinstance(self._decoder, OpenAIStreamDecoder):
            return end
        return usage_chunk(self._decoder.head, billed) + end

    def failure_event(self, err: GatewayError, usage: Usage) -> bytes:
        """The event that ends a Responses stream the gateway cuts (``err``): a
        ``response.incomplete`` for a budget or a rate limit, else ``response.failed``, as
        the decoding path's encoder says, but continuing the provider's stream (see the
        module doc), with ``usage`` (what the ledger bills). Empty for the other wires, or
        when the provider's ``response.created`` never came: the caller's encoder ends it."""
        if self._trail is None:
            return b""
        self._count_pending()  # the open items' text
        return self._trail.failure_event(err, usage)

    def _normalise(self, data: bytes) -> bytes:
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if data.find(b"\r") >= 0:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def output_tokens(self) -> int:
        """Estimated tokens of every plain content event forwarded so far, and of the thinking
        among the events decoded (:attr:`~trioproxy.providers.base.StreamDecoder.hidden_tokens`)."""
        self._count_pending()
        return self._counted + self._decoder.hidden_tokens

    def hidden_tokens(self) -> int:
        """Estimated tokens of the hidden reasoning (thinking, streamed reasoning) among
        :meth:`output_tokens`."""
        self._count_pending()
        return self._hidden + self._decoder.hidden_tokens

    def feed_plain(self, data: bytes) -> bool:
        """The usual read, exactly one plain content event and nothing carried over: kept
        aside (for :meth:`output_tokens`) and ``True``, to forward ``data`` as it is. Else
        ``False`` and nothing taken: :meth:`feed` it."""
        end = len(data) - 2
        if (  # one event: its first blank line is its end
            end < 0
            or self._rest
            or self._first
            or self._cr
            or data.find(b"\n\n") != end
            or data.find(b"\r") >= 0
            or not self._plain(data, end)
            or self._decoder.done
        ):
            return False
        self._pending.append(data)  # with its blank line: counted at ``skip`` as ever
        self._pending_size += end
        if self._pending_size > PENDING_MAX:
            self._count_pending()
        return True

    def feed(self, data: bytes) -> Tapped:
        if self.feed_plain(data):
            return Tapped(forward=data, content_events=1)
        out = Tapped()
        block = self._block(data)
        if not block:
            return out
        kept: list[bytes] = []
        edited = False
        held = -1  # where the final event held back (out.finish) was: what follows, after it
        events = block.split(b"\n\n")
        events.pop()  # after the last separator: empty
        for n, ev in enumerate(events):
            try:
                if ev and not self._take(ev, out, kept):
                    edited = True
                    if held < 0 and out.finish is not None:
                        held = len(kept)
            except (ValueError, ProviderError) as exc:  # the events before it go first
                out.error, edited = exc, True
                break
            if self.done:
                edited = edited or n + 1 < len(events)
                self._rest.clear()
                break
        if self._pending_size > PENDING_MAX:
            self._count_pending()
        if 0 <= held < len(kept) and out.finish is not None:  # message_delta, then message_stop
            out.finish = partial(then, out.finish, b"".join(ev + b"\n\n" for ev in kept[held:]))
            del kept[held:]
        out.forward = b"".join(ev + b"\n\n" for ev in kept) if edited else block
        return out

    def feed_events(self, data: bytes) -> Iterator[Tapped]:
        """:meth:`feed`, one event at a time: each is taken (and its tokens counted by
        :meth:`output_tokens`) only when the previous one was handed on. For a stream metered
        event by event (a capped reservation): the event that crosses the budget is the last
        one written, as on the decoding path, however many came in one read."""
        block = self._block(data)
        for ev in block.split(b"\n\n")[:-1] if block else ():
            if not ev:
                continue  # extra blank lines between events
            out, kept = Tapped(), list[bytes]()
            self._take(ev, out, kept)
            if self._pending_size > PENDING_MAX:
                self._count_pending()
            out.forward = b"".join(e + b"\n\n" for e in kept)
            yield out
            if self.done:
                self._rest.clear()
                return

    def _block(self, data: bytes) -> bytes:
        """The complete events of what has come so far (the rest kept for the next read).

        An event open across reads is kept as its pieces; only the new bytes are searched for
        its blank line (and the LF that ends it right after a piece ending in LF), and the
        pieces are joined once, when it ends: a buffer joined and searched again on every
        read made one long event quadratic (in 16 KiB reads an 8 MiB event took 1.7 s of CPU,
        a 32 MiB one 31 s; now 0.12 s and 0.64 s with its token count,
        ``loadtest/sse_long_event.py``). ``feed_plain``, one whole event per read, is as it was."""
        if self.done or not data:
            return b""
        if self._cr or data.find(b"\r") >= 0:
            data = self._normalise(data)
        rest = self._rest
        end = data.rfind(b"\n\n") + 2  # past the last blank line in ``data``; 1: none
        if not rest:
            if end == 1:
                if len(data) > MAX_EVENT_BYTES:  # a provider that never ends its event
                    raise ValueError(f"an event longer than {MAX_EVENT_BYTES} bytes")
                if data:
                    rest.append(data)
                    self._rest_size = len(data)
                return b""
            if end == len(data):
                return data
            rest.append(data[end:])
            self._rest_size = len(data) - end
            return data[:end]
        if end == 1 and not (data[:1] == b"\n" and rest[-1][-1:] == b"\n"):  # still open
            size = self._rest_size + len(data)
            if size > MAX_EVENT_BYTES:
                raise ValueError(f"an event longer than {MAX_EVENT_BYTES} bytes")
            if data:
                rest.append(data)
                self._rest_size = size
            return b""
        # (``end`` is 1 for a blank line whose first LF ended the pieces)
        rest.append(data[:end] if end < len(data) else data)
        block = b"".join(rest)
        rest.clear()
        if end < len(data):
            rest.append(data[end:])
            self._rest_size = len(data) - end
        return block

    def _take(self, ev: bytes, out: Tapped, kept: list[bytes]) -> bool:
        """One event (without its blank line) into ``out`` and, to forward, ``kept``;
        ``False`` if what is kept is not the event as it came (edited or left out)."""
        if not self._first and self._plain(ev, len(ev)):
            out.content_events += 1
            kept.append(ev)
            self._pending.append(ev)
            self._pending_size += len(ev)
            return True
        self._first = False
        if self._pending and self._trail is not None and ev.find(RESPONSES_TEXT_TYPE) >= 0:
            self._count_pending()  # an odd text delta: the open item's text stays in order
        bad, unbilled = self._decoder.bad_usages, self._decoder.unbilled_ends
        decoded = self._decode(ev)
        out.events.extend(decoded)
        if self._decoder.unbilled_ends != unbilled and not self._drop_usage:
            out.finish = partial(self._billed, ev)  # without a usable usage: with what is
            return False  # billed, once metered ([DONE]: after a usage chunk, if asked for)
        if self._decoder.bad_usages != bad:  # its usage is no usage: not forwarded
            if scrubbed := self._without_usage(ev):
                kept.append(scrubbed)
            return False
        if self._drop_usage and self._usage_only(decoded, ev):
            return False
        kept.append(ev)
        return True

    def _decode(self, ev: bytes) -> list[StreamEvent]:
        decoded: list[StreamEvent] = []
        for sse in self._parser.feed(ev + b"\n\n"):
            decoded.extend(self._decoder.feed(sse))
        return decoded

    def _without_usage(self, ev: bytes) -> bytes:
        """``ev`` (one event the decoder parsed) without its malformed ``usage``: empty for
        an OpenAI usage-only chunk (left out). An Anthropic ``message_start`` goes as it came
        (its attempt fails, unless the whole stream came in the first reads: not fixed here);
        the final events are held instead (:attr:`Tapped.finish`)."""
        if self.wire != "openai":
            return ev
        head, data = json_event(ev)
        if not data.get("choices"):
            return b""
        del data["usage"]
        return event_bytes(head, data)

    @staticmethod
    def _usage_only(decoded: list[StreamEvent], ev: bytes) -> bool:
        """The usage-only chunk (``"choices": []``, however spaced: a server writing Python's
        ``json.dumps`` spacing had it sent to a caller that did not ask for usage, whose
        ``chunk.choices[0]`` then raised)."""
        return any(isinstance(e, UsageReport) for e in decoded) and (
            EMPTY_CHOICES.search(ev) is not None
        )

    def _count_pending(self) -> None:
        if self._trail is not None:
            self._count_responses()
            return
        pending, self._pending, self._pending_size = self._pending, [], 0
        count = openai_tokens if self.wire == "openai" else anthropic_tokens
        skip = ANTHROPIC_DATA if self.wire == "anthropic" else len(OPENAI_DATA) - 1
        for ev in pending:
            try:
                shown, hidden = count(orjson.loads(ev[skip:]))
            except ValueError:
                continue  # forwarded as it came; counts nothing
            self._counted += shown + hidden
            self._hidden += hidden

    def _count_responses(self) -> None:
        """Count the pending text deltas (the trail keeps the open items' text)."""
        pending, self._pending, self._pending_size = self._pending, [], 0
        assert self._trail is not None
        self._counted += self._trail.take_deltas(pending, RESPONSES_DATA)


__all__ = ["PassthroughTap", "Tapped"]
