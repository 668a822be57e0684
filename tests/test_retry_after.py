"""Retry-After from observed state: the pure maths on explicit times, and the worker's slots
on trio's MockClock (exact virtual times; no sleeps on the wall clock)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from trioproxy.pipeline.retry_after import DecayedCount, retry_after_s
from trioproxy.pipeline.slots import Slots


def test_a_decayed_count_tends_to_the_events_of_the_last_window() -> None:
    c = DecayedCount(window=1.0)
    for i in range(2000):  # 100 events per second for 20 s
        c.add(i / 100)
    assert c.count(20.0) == pytest.approx(100, rel=0.01)
    assert c.rate(20.0) == pytest.approx(100, rel=0.01)
    assert c.count(21.0) == pytest.approx(100 / math.e, rel=0.01)  # a window later, no events
    assert c.rate(60.0) < 1e-10


def test_a_decayed_count_ignores_time_going_backwards() -> None:
    c = DecayedCount(window=1.0)
    c.add(5.0)
    c.add(4.0)  # an earlier time: counted, not decayed
    assert c.count(5.0) == 2.0


@pytest.mark.parametrize(
    ("waiting", "refused", "drain", "expected"),
    [
        (0, 0.0, 1000.0, 1),  # slots free fast: never less than 1 s
        (80, 0.0, 140.0, 1),  # the line alone drains in 0.58 s
        (80, 420.0, 140.0, 4),  # the shedding run: 501 callers ahead at 140 per s
        (80, 420.0, 50.0, 10),  # 10.02 s: the bound
        (0, 0.0, 0.0, 10),  # nothing finished lately: the bound
        (3, 0.0, 2.0, 2),  # exactly 2.0 s
        (4, 0.0, 2.0, 3),  # 2.5 s rounded up
    ],
)
def test_retry_after_is_the_callers_ahead_over_the_drain_rate(
    waiting: int, refused: float, drain: float, expected: int
) -> None:
    got = retry_after_s(waiting=waiting, refused_recently=refused, drain_per_s=drain, max_s=10)
    assert got == expected


def test_retry_after_bound_below_one_is_one() -> None:
    assert retry_after_s(waiting=100, refused_recently=0, drain_per_s=0.0, max_s=0) == 1


async def test_slots_retry_after_follows_the_drain_and_the_refusals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = Slots(max_in_flight=2, queue_max=0, queue_timeout_s=0.5, per_key=0,
                  retry_after_max_s=10)  # fmt: skip
    assert await slots.acquire() and await slots.acquire()
    assert slots.full()
    assert slots.retry_after() == 10  # nothing released yet: no drain rate, the bound
    # 20 requests per second finish (and are replaced) for 5 s: drain rate ~20 per s
    for _ in range(100):
        await trio.sleep(0.05)
        slots.release()
        assert await slots.acquire()
    assert slots.retry_after() == 1  # (0 + 0 + 1) / 20: 0.05 s, at least 1
    for _ in range(100):  # 100 callers refused within this instant
        assert not await slots.acquire()
    assert slots.statistics().refused_full == 100
    # (100 + 1) / 20.5 per s (a decayed count just after an event: 1 / (1 - e^-0.05)) = 4.9 s
    assert slots.retry_after() == 5
    await trio.sleep(5.0)  # nothing finishes for 5 s: the drain rate decays, the wait grows
    assert slots.retry_after() == 10


async def test_a_full_worker_is_known_before_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = Slots(max_in_flight=1, queue_max=1, queue_timeout_s=5.0, per_key=0)
    assert not slots.full()
    assert await slots.acquire()
    assert not slots.full()  # the line has room
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slots.acquire)
        await trio.testing.wait_all_tasks_blocked()
        assert slots.full()  # every slot taken and the line full
        slots.refuse_full()
        assert slots.statistics().refused_full == 1
        slots.release()  # hands the slot to the one waiting
        await trio.testing.wait_all_tasks_blocked()
        assert not slots.full()
