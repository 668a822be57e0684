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
billed what it had received by its last update: the first comes 1-1.5 :data:`PROGRESS_S` after
the stream began, then one every :data:`PROGRESS_S`. Each update is a new intent line that
replaces the attempt's last one (resolved at once, so the journal's segments behind a long
stream are freed as it streams instead of pinned for its life). So that no line of a running
stream stays behind for long:

* an attempt that ended before the stream (it failed before its first byte, or lost a hedge)
  is journaled once more as it ended, with what the request's records will bill it (nothing,
  if it received nothing): its first intent, billing the prompt, pinned the journal for the
  stream's life and, after a crash, billed the prompt the live path does not;
* an attempt whose output did not grow, or that ended, is journaled again every
  :data:`REFRESH_PASSES` passes;
* an update the journal could not take (a full disk) is tried again at the next pass.

Streams shorter than half a :data:`PROGRESS_S` cost nothing but a dict entry.

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
SLICE = 100
"""Streams updated per scheduler turn."""
REFRESH_PASSES = 5
"""Passes after which an attempt's intent is journaled again though its output did not grow
(its old line would keep the journal's segments after it on disk)."""


@dataclass(slots=True)
class _Live:
    ctx: RequestContext
    race: Race
    meters: Mapping[int, Meter]
    intents: dict[int, int]
    """Attempt index -> the token of its latest intent (resolved with the request's records,
    or by the update that replaces it)."""
    channel: trio.MemoryReceiveChannel[Any] | None
    """Its relay channel (its fill is a metric)."""
    started: float
    first_pass: int = 0
    """The pass the stream began in (its first intent's age, in passes)."""
    journaled: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Attempt index -> (the output tokens its last journaled intent bills, its pass)."""
    ended: set[int] = field(default_factory=set)
    """Attempts journaled as they ended (then only refreshed)."""


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
        self.passes = 0

    def watch(
        self, ctx: RequestContext, race: Race, meters: Mapping[int, Meter],
        intents: dict[int, int], channel: trio.MemoryReceiveChannel[Any] | None = None,
    ) -> int:  # fmt: skip
        """Keep a stream's progress journaled until :meth:`forget` (call it before its final
        records are journaled: no update after them). ``intents``: attempt index -> the token
        of its latest intent, which each update replaces (the one it replaces resolved at
        once: the journal's segments behind a long stream are freed as it runs)."""
        key = next(self._ids)
        live = _Live(ctx, race, meters, intents, channel, trio.current_time(), self.passes)
        self._live[key] = live
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

    def note(self, *, min_age: float = 0.0) -> int:
        """One pass over every stream at least ``min_age`` seconds old: journal each running
        attempt whose output grew (or that ended, or is due a refresh); how many."""
        self.passes += 1
        return self._note(list(self._live), trio.current_time() - min_age)

    def _note(self, keys: list[int], born_by: float) -> int:
        """No checkpoint inside: a stream's final records cannot come between its update and
        its token (a stream forgotten since ``keys`` were taken is passed by)."""
        n = 0
        for key in keys:
            live = self._live.get(key)
            if live is None or live.started > born_by:
                continue
            for a in live.race.attempts:
                meter = live.meters.get(a.index)
                if meter is None:
                    continue
                ended = a.outcome not in ("running", "won")
                record = self._record(live, a, meter, ended)
                if record is None:
                    continue
                token = self.sink.intend(record)
                if token < 0:  # not journaled (no journal, or the append failed): next pass
                    continue
                live.journaled[a.index] = (record.output_tokens, self.passes)
                if ended:
                    live.ended.add(a.index)
                n += 1
                old = live.intents.get(a.index)
                live.intents[a.index] = token
                if old is not None:
                    self.sink.resolve(old)  # the newer line stands for the attempt
        self.updates += n
        return n

    def _record(self, live: _Live, a: Attempt, meter: Meter, ended: bool) -> UsageRecord | None:
        """What to journal for attempt ``a`` at this pass, if anything."""
        since, at = live.journaled.get(a.index, (0, live.first_pass))
        due = self.passes - at >= REFRESH_PASSES  # its line is old: journaled again
        if ended:  # as the request's records will bill it (accounting.spent)
            if a.index in live.ended and not due:
                return None
            return intent_record(live.ctx, a, meter.final(live.ctx.prompt_estimate))
        record = progress_record(live.ctx, a, meter, since)
        if record is None and due:  # no growth: refreshed
            usage = meter.final(live.ctx.prompt_estimate) if meter.received_any else None
            record = intent_record(live.ctx, a, usage)
        return record

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every ``interval``, a pass over the streams at least that old, :data:`SLICE` streams
        a scheduler turn (a pass over 1,000 streams in one turn held the loop ~120-220 ms on
        a busy box: a verbatim stream's meter parses its content events when asked)."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.passes += 1
            keys, born_by = list(self._live), trio.current_time() - self.interval / 2
            for at in range(0, len(keys), SLICE):
                self._note(keys[at : at + SLICE], born_by)
                await trio.lowlevel.checkpoint()


__all__ = ["PROGRESS_S", "REFRESH_PASSES", "StreamProgress", "progress_record"]
