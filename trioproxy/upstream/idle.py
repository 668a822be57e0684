"""The idle deadline of every relay in a Trio run, kept by one watchdog task.

A relay (:mod:`trioproxy.upstream.attempt`) marks its :class:`IdleWatch` after each chunk;
the watchdog cancels the watch's scope once ``idle`` seconds pass with no chunk and no write
in progress.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import trio


class IdleWatch:
    """Cancels :attr:`scope` once ``idle`` seconds pass after :attr:`last` (the last
    chunk) while no write is in progress; kept by the run's :class:`Watchdog`."""

    __slots__ = ("idle", "last", "scope", "writing")

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.last = trio.current_time()
        self.writing = False
        self.scope = trio.CancelScope()


class Watchdog:
    """One task per Trio run keeps every relay's idle deadline (a task per stream cost a
    spawn, a nursery and a timer each). It sleeps until the earliest deadline, then cancels
    the watches that passed theirs; a watch whose write is in progress gets one more idle
    period from now (a slow client is not idleness), as its relay loop moves ``last`` after
    the write anyway."""

    def __init__(self) -> None:
        self.watches: set[IdleWatch] = set()
        self.next_due = math.inf
        self.wake = trio.Event()

    def add(self, watch: IdleWatch) -> None:
        self.watches.add(watch)
        due = watch.last + watch.idle
        if due < self.next_due:
            self.next_due = due
            self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake = trio.Event()
            with trio.move_on_at(self.next_due):
                await self.wake.wait()
            now = trio.current_time()
            due_next = math.inf
            for watch in list(self.watches):
                due = watch.last + watch.idle
                if due <= now:
                    if not watch.writing:
                        watch.scope.cancel()
                        self.watches.discard(watch)
                        continue
                    watch.last = now
                    due = now + watch.idle
                due_next = min(due_next, due)
            self.next_due = due_next


_WATCHDOG: trio.lowlevel.RunVar[Watchdog] = trio.lowlevel.RunVar("trioproxy_idle_watchdog")


@contextmanager
def watched(watch: IdleWatch) -> Iterator[None]:
    """Keep ``watch``'s idle deadline while the block runs (this run's watchdog)."""
    try:
        dog = _WATCHDOG.get()
    except LookupError:
        dog = Watchdog()
        _WATCHDOG.set(dog)
        trio.lowlevel.spawn_system_task(dog.run, name="trioproxy idle watchdog")
    dog.add(watch)
    try:
        yield
    finally:
        dog.watches.discard(watch)


__all__ = ["IdleWatch", "Watchdog", "watched"]
