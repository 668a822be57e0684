"""A running stream's provisional records kept up to date (pipeline/progress.py), on a fake
sink and Trio's mock clock: each update replaces the attempt's last intent and resolves it
at once (a long stream no longer pins the journal's segments behind it for its life), every
token is resolved exactly once, and the periodic pass leaves streams younger than its
interval alone."""

from __future__ import annotations

import trio
import trio.testing

from tests.test_accounting_records import TARGETS, NoBreakers, context
from trioproxy.ledger.record import UsageRecord
from trioproxy.pipeline.progress import StreamProgress
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
