"""The worker's streams being served, and their provisional records brought up to date.

Each attempt's provisional record (its *intent*, :func:`~trioproxy.pipeline.accounting.
intent_record`) is journaled before the attempt goes upstream, billing the prompt's estimate
and no output: it stands if the process dies before the request's final records are
journaled. A stream killed after minutes of output (SIGKILL, the OOM killer) was recovered as
that intent alone: the team billed nothing for what the provider generated and the caller
received, and the dead process's reservation settled at that.

:class:`StreamProgress` keeps the streams being served and, every :data:`PROGRESS_S`, journals
again the intent of each attempt whose output grew since, with what its meter would bill if it
ended now (:meth:`~trioproxy.upstream.meter.Meter.final`: the provider's usage when it came,
else the prompt's estimate and the output received). The journal's recovery keeps the last
intent of an attempt (:func:`~trioproxy.ledger.journal.resolve_lines`), so a killed stream is
billed what it had received by its last update, at most :data:`PROGRESS_S` behind. Each update
is one more intent, resolved with the request's other intents when its final records are
journaled. Streams shorter than :data:`PROGRESS_S` cost nothing but a dict entry.

One per worker process (the app's, handed to each chat handler it makes, at start and at each
reload: the streams begun before a reload are still here), it also counts the open streams and
the events waiting in their relay channels for the metrics.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from trioproxy.ledger.record import UsageRecord, UsageSink
from trioproxy.pipeline.accounting import intent_record
from trioproxy.pipeline.context import RequestContext
from trioproxy.upstream.meter import Meter
from trioproxy.upstream.race import Attempt, Race

PROGRESS_S = 2.0
"""Seconds between two updates of a running stream's provisional records."""


@dataclass(slots=True)
class _Live:
    ctx: RequestContext
    race: Race
    meters: Mapping[int, Meter]
    intents: list[int]
    """The request's intent tokens: each update's is added, resolved with the rest."""
    channel: trio.MemoryReceiveChannel[Any] | None
    """Its relay channel (its fill is a metric)."""
    journaled: dict[int, int] = field(default_factory=dict)
    """Attempt index -> the output tokens its last journaled intent bills."""


def progress_record(
    ctx: RequestContext, a: Attempt, meter: Meter, since: int
) -> UsageRecord | None:
    """Attempt ``a``'s intent as its meter stands, or None if its output did not grow past
    ``since`` tokens (no I/O; a verbatim stream's meter counts its content when asked)."""
    if not meter.received_any:
        return None
    usage = meter.final(ctx.prompt_estimate)
    if usage.output_tokens <= since:
        return None
    return intent_record(ctx, a, usage)


class StreamProgress:
    """The worker's streams being served; :meth:`run` journals their progress."""

    def __init__(self, sink: UsageSink, interval: float = PROGRESS_S) -> None:
        self.sink = sink
        self.interval = interval
        self._live: dict[int, _Live] = {}
        self._ids = itertools.count()
        self.updates = 0
        """Intents journaled again, in all (a test's observation)."""

    def watch(
        self, ctx: RequestContext, race: Race, meters: Mapping[int, Meter], intents: list[int],
        channel: trio.MemoryReceiveChannel[Any] | None = None,
    ) -> int:  # fmt: skip
        """Keep a stream's progress journaled until :meth:`forget` (call it before its final
        records are journaled: no update after them)."""
        key = next(self._ids)
        self._live[key] = _Live(ctx, race, meters, intents, channel)
        return key

    def __len__(self) -> int:
        """Streams being served."""
        return len(self._live)

    def buffered(self) -> int:
        """Events waiting in the relay channels of the streams being served."""
        return sum(
            live.channel.statistics().current_buffer_used
            for live in self._live.values()
            if live.channel is not None
        )

    def forget(self, key: int) -> None:
        self._live.pop(key, None)

    def note(self) -> int:
        """One pass: journal each running attempt whose output grew; how many. No checkpoint
        inside (a stream's final records cannot come between its update and its token)."""
        n = 0
        for live in self._live.values():
            for a in live.race.attempts:
                meter = live.meters.get(a.index)
                if meter is None:
                    continue
                record = progress_record(live.ctx, a, meter, live.journaled.get(a.index, 0))
                if record is None:
                    continue
                live.intents.append(self.sink.intend(record))
                live.journaled[a.index] = record.output_tokens
                n += 1
        self.updates += n
        return n

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.note()


__all__ = ["PROGRESS_S", "StreamProgress", "progress_record"]
