"""How many requests run at once: per worker with a bounded waiting line, and per API key.

A request takes its key's slot once authenticated (so one key's slow uploads or long
streams use up only that key's cap, ``server.max_in_flight_per_key``), and a worker
slot only once its body is in (``server.max_in_flight``). When every worker slot is
taken, up to ``queue_max`` requests wait, each at most ``queue_timeout_s``, first in
first out; anyone else is refused at once (the caller answers 503 + Retry-After).
Admitted requests are never slowed down by the ones waiting or refused.

A request that arrives while every slot is taken and the line is full (:meth:`Slots.full`)
is refused before its body is read: it would be refused once read anyway, and reading it
costs the worker what the admitted requests need. ``Retry-After`` comes from what the
worker observes (:meth:`Slots.retry_after`, :mod:`trioproxy.pipeline.retry_after`): the
line and the recent refusals over the rate slots free up, bounded by ``retry_after_max_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from trioproxy.pipeline.retry_after import DecayedCount, retry_after_s

RETRY_AFTER_MAX_S = 10
"""Default bound on a refusal's ``Retry-After`` (``server.retry_after_max_s``)."""


@dataclass(frozen=True, slots=True)
class SlotStats:
    in_flight: int
    waiting: int
    refused_full: int
    refused_timeout: int
    refused_key: int


class Slots:
    def __init__(
        self, max_in_flight: int, queue_max: int, queue_timeout_s: float, per_key: int,
        retry_after_max_s: int = RETRY_AFTER_MAX_S,
    ) -> None:  # fmt: skip
        self.max_in_flight = max_in_flight
        self.retry_after_max_s = retry_after_max_s
        self.queue_max = queue_max
        self.queue_timeout_s = queue_timeout_s
        self.per_key = per_key
        self.in_flight = 0
        self._line = trio.lowlevel.ParkingLot()
        self._keys: dict[str, int] = {}
        self._refused_full = self._refused_timeout = self._refused_key = 0
        self._released = DecayedCount()
        """Slots freed (the drain rate)."""
        self._refused = DecayedCount()
        """Requests refused for a full worker (they come back)."""

    def statistics(self) -> SlotStats:
        return SlotStats(self.in_flight, len(self._line), self._refused_full,
                         self._refused_timeout, self._refused_key)  # fmt: skip

    # per key ----------------------------------------------------------------------

    def enter_key(self, key: str) -> bool:
        """Take one of ``key``'s slots; False when the key is at its cap."""
        held = self._keys.get(key, 0)
        if self.per_key and held >= self.per_key:
            self._refused_key += 1
            return False
        self._keys[key] = held + 1
        return True

    def exit_key(self, key: str) -> None:
        held = self._keys[key] - 1
        if held:
            self._keys[key] = held
        else:
            del self._keys[key]

    def held_by(self, key: str) -> int:
        return self._keys.get(key, 0)

    # per worker ---------------------------------------------------------------------

    def full(self) -> bool:
        """Every slot taken and the line full: :meth:`acquire` would refuse at once."""
        return self.in_flight >= self.max_in_flight and len(self._line) >= self.queue_max

    def refuse_full(self) -> None:
        """Count a request refused because :meth:`full` (before its body was read)."""
        self._refused_full += 1
        self._refused.add(trio.current_time())

    async def acquire(self) -> bool:
        """A worker slot, at once or after waiting in line; False: refused (full or late)."""
        if self.in_flight < self.max_in_flight and not self._line:
            self.in_flight += 1
            return True
        if len(self._line) >= self.queue_max:
            self.refuse_full()
            return False
        with trio.move_on_after(self.queue_timeout_s):
            await self._line.park()  # release() hands its slot over: in_flight unchanged
            return True
        self._refused_timeout += 1
        self._refused.add(trio.current_time())
        return False

    def release(self) -> None:
        self._released.add(trio.current_time())
        if not self._line.unpark(count=1):
            self.in_flight -= 1

    def retry_after(self) -> int:
        """Whole seconds a request refused now should wait: the line and the recent
        refusals over the observed rate slots free up, in ``1..retry_after_max_s``
        (:func:`~trioproxy.pipeline.retry_after.retry_after_s`)."""
        now = trio.current_time()
        return retry_after_s(
            waiting=len(self._line), refused_recently=self._refused.count(now),
            drain_per_s=self._released.rate(now), max_s=self.retry_after_max_s,
        )  # fmt: skip


__all__ = ["SlotStats", "Slots"]
