"""A running stream's provisional records kept up to date (pipeline/progress.py), on a fake
sink and Trio's mock clock: each update replaces the attempt's last intent and resolves it
at once (a long stream no longer pins the journal's segments behind it for its life), every
token is resolved exactly once, and the periodic pass leaves streams younger than its
interval alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.test_accounting_records import TARGETS, NoBreakers, context
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.pipeline.accounting import intent_record, spent, usage_records
from trioproxy.pipeline.context import RequestContext
from trioproxy.pipeline.progress import REFRESH_PASSES, StreamProgress
from trioproxy.upstream.meter import Meter
from trioproxy.upstream.race import Attempt, Race


class Sink:
    """Tokens handed out and resolved; token n is the n-th intent (as a journal segment's
    number would be, one segment per line here)."""

    def __init__(self) -> None:
        self.intents: list[UsageRecord] = []
        self.resolved: list[int] = []

    def intend(self, record: UsageRecord) -> int:
        self.intents.append(record)
        return len(self.intents) - 1

    def resolve(self, token: int) -> None:
        self.resolved.append(token)


async def _never(attempt: Attempt, claim: object) -> None:
    raise AssertionError("not run")


async def test_each_update_replaces_and_resolves_the_last_intent() -> None:
    sink = Sink()
    progress = StreamProgress(sink, interval=2.0)  # type: ignore[arg-type]
    race = Race(TARGETS, _never, NoBreakers())  # type: ignore[arg-type]
    a = Attempt(0, 0, TARGETS[0], "primary", started_at=0.0, wall_started_at=1.7e9)
    race.attempts.append(a)
    meter = Meter(received_any=True)
    intents = {0: sink.intend(UsageRecord(0.0, "rid-1", "attempt", "k", "t", "u", "f", "r"))}
    key = progress.watch(context(), race, {0: meter}, intents)
    assert progress.note() == 0  # nothing received yet beyond the prompt
    meter.output_estimate = 10
    assert progress.note() == 1 and intents == {0: 1} and sink.resolved == [0]
    assert sink.intents[1].output_tokens == 10 and sink.intents[1].outcome == "interrupted"
    assert sink.intents[1].cost_micros > sink.intents[0].cost_micros
    assert progress.note() == 0  # no growth: no line
    meter.output_estimate = 25
    assert progress.note() == 1 and intents == {0: 2} and sink.resolved == [0, 1]
    progress.forget(key)
    meter.output_estimate = 40
    assert progress.note() == 0 and len(progress) == 0  # forgotten: its records are final
    # the request's records then resolve what is left: each token exactly once in all
    sink.resolved.extend(intents.values())
    assert sorted(sink.resolved) == list(range(len(sink.intents)))


async def test_the_periodic_pass_leaves_young_streams_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Sink()
    progress = StreamProgress(sink, interval=2.0)  # type: ignore[arg-type]
    race = Race(TARGETS, _never, NoBreakers())  # type: ignore[arg-type]
    a = Attempt(0, 0, TARGETS[0], "primary", started_at=0.0, wall_started_at=1.7e9)
    race.attempts.append(a)
    async with trio.open_nursery() as nursery:
        await nursery.start(progress.run)
        await trio.sleep(1.5)  # the first pass comes at 2.0: this stream is 0.5 s old then
        meter = Meter(received_any=True, output_estimate=5)
        progress.watch(context(), race, {0: meter}, {})
        await trio.sleep(1.0)
        assert progress.updates == 0 and not sink.intents
        await trio.sleep(2.0)  # the pass at 4.0: 2.5 s old
        assert progress.updates == 1 and sink.intents[0].output_tokens == 5
        nursery.cancel_scope.cancel()


# -- on a real journal (a review's findings) -------------------------------------------------


class JournalSink:
    """The ledger writer's ``intend`` / ``resolve`` on a real :class:`Journal`."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.fail = False

    def intend(self, record: UsageRecord) -> int:
        return -1 if self.fail else self.journal.append(record, intent=True)

    def resolve(self, token: int) -> None:
        self.journal.done(token)


def other_traffic(journal: Journal, n: int = 50) -> None:
    """Other requests' final records, journaled then written to the database (released)."""
    for i in range(n):
        r = UsageRecord(1.0, f"other-{i}", "request", "k", "t", "u", "f", "r")
        journal.done(journal.append(r))


def a_stream(
    sink: JournalSink, progress: StreamProgress, *, failed_first: bool
) -> tuple[Meter, RequestContext, Race, dict[int, Meter]]:
    """A stream as the handler sets it up: each attempt's intent journaled as it starts;
    with ``failed_first``, attempt 0 failed before its first byte (or lost a hedge)."""
    ctx, race = context(), Race(TARGETS, _never, NoBreakers())  # type: ignore[arg-type]
    meters: dict[int, Meter] = {}
    intents: dict[int, int] = {}
    if failed_first:
        a0 = Attempt(0, 0, TARGETS[0], "primary", started_at=0.0, wall_started_at=1.7e9)
        a0.outcome = "failed"
        race.attempts.append(a0)
        intents[0] = sink.intend(intent_record(ctx, a0))
        meters[0] = Meter()  # nothing received
    n = len(race.attempts)
    role = "fallback" if failed_first else "primary"
    a1 = Attempt(n, 1, TARGETS[1], role, started_at=0.0, wall_started_at=1.7e9)  # type: ignore[arg-type]
    a1.outcome, race.winner = "won", a1
    race.attempts.append(a1)
    intents[n] = sink.intend(intent_record(ctx, a1))
    meters[n] = meter = Meter(received_any=True)
    progress.watch(ctx, race, meters, intents)
    return meter, ctx, race, meters


def die(journal: Journal) -> None:
    """SIGKILL: the kernel closes the descriptors (and drops the locks); nothing else."""
    for seg in journal._segments.values():
        os.close(seg.fd)
    journal._segments.clear()


def recovered(state_dir: Path) -> list[UsageRecord]:
    found: list[UsageRecord] = []
    Journal(state_dir).recover(Spool(state_dir), found)
    return found


@pytest.mark.parametrize("grows", [True, False])
@pytest.mark.parametrize("failed_first", [False, True])
async def test_a_long_stream_does_not_pin_the_journal(
    tmp_path: Path, failed_first: bool, grows: bool
) -> None:
    """Ten minutes of passes beside other traffic: the journal keeps a few segments. An
    attempt that failed before the winner (a fallback, a lost hedge) kept its first intent
    for the stream's life (301 segments, 8.8 MB, and one descriptor each), and so did one
    whose output did not grow (151)."""
    journal = Journal(tmp_path)
    sink = JournalSink(journal)
    progress = StreamProgress(sink)  # type: ignore[arg-type]
    meter = a_stream(sink, progress, failed_first=failed_first)[0]
    for _ in range(300):
        meter.output_estimate += 20 if grows else 0
        progress.note()
        other_traffic(journal)
        journal.rotate()  # the writer's, every fsync interval
    assert journal.statistics().segments <= REFRESH_PASSES + 2, journal.statistics()


async def test_a_crashed_fallback_stream_is_billed_as_the_live_path_bills_it(
    tmp_path: Path,
) -> None:
    """Attempt 0 failed before its first byte (nothing received: the live records bill it
    nothing); attempt 1 streams. After a SIGKILL the recovery billed attempt 0 its prompt
    (3,702 uUSD more than the live bill): its first intent was never replaced."""
    journal = Journal(tmp_path)
    sink = JournalSink(journal)
    progress = StreamProgress(sink)  # type: ignore[arg-type]
    meter, ctx, race, meters = a_stream(sink, progress, failed_first=True)
    meter.output_estimate = 500
    assert progress.note() == 2  # the failed attempt as it ended, the winner's progress
    assert progress.note() == 0  # nothing new
    live = usage_records(ctx, race, spent(ctx, race, meters), status=200, error=None,
                         client_gone=False)[-1].cost_micros  # fmt: skip
    die(journal)
    found = [r for r in recovered(tmp_path) if r.request_id == ctx.request_id]
    assert next(r for r in found if r.kind == "request").cost_micros == live
    assert [r.cost_micros for r in found if r.kind == "attempt" and r.attempt == 0] == [0]


async def test_a_progress_the_journal_could_not_take_is_tried_again(tmp_path: Path) -> None:
    """A failed append counted as journaled: a stream whose output then stopped growing (its
    upstream done, a slow client draining) stayed at its old intent (recovered: 0 tokens)."""
    journal = Journal(tmp_path)
    sink = JournalSink(journal)
    progress = StreamProgress(sink)  # type: ignore[arg-type]
    meter = a_stream(sink, progress, failed_first=False)[0]
    sink.fail, meter.output_estimate = True, 1000
    assert progress.note() == 0  # the disk is full
    sink.fail = False  # space again; no more output
    assert progress.note() == 1
    die(journal)
    (attempt,) = [r for r in recovered(tmp_path) if r.kind == "attempt"]
    assert attempt.output_tokens == 1000


async def test_a_stream_is_first_journaled_within_one_and_a_half_intervals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream begun just after a pass was skipped by the next (younger than the interval)
    and first journaled 2 intervals after it began: killed at 3.9 s, billed no output."""
    sink = Sink()
    progress = StreamProgress(sink, interval=2.0)  # type: ignore[arg-type]
    race = Race(TARGETS, _never, NoBreakers())  # type: ignore[arg-type]
    race.attempts.append(
        Attempt(0, 0, TARGETS[0], "primary", started_at=0.0, wall_started_at=1.7e9)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(progress.run)
        await trio.sleep(0.01)
        meter = Meter(received_any=True)
        progress.watch(context(), race, {0: meter}, {})
        for _ in range(29):  # to 2.91 s: the pass at 2.0 took it (1.99 s old)
            meter.output_estimate += 10
            await trio.sleep(0.1)
        assert progress.updates == 1
        nursery.cancel_scope.cancel()
