"""How many requests run at once: per worker with a bounded waiting line, and per API key.

A request takes its key's slot once authenticated (so one key's slow uploads or long
streams use up only that key's cap, ``server.max_in_flight_per_key``), and a worker
slot only once its body is in (``server.max_in_flight``). When every worker slot is
taken, up to ``queue_max`` requests wait, each at most ``queue_timeout_s``, first in
first out; anyone else is refused at once (the caller answers 503 + Retry-After).
Admitted requests are never slowed down by the ones waiting or refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class SlotStats:
    in_flight: int
    waiting: int
    refused_full: int
    refused_timeout: int
    refused_key: int


class Slots:
    def __init__(
        self, max_in_flight: int, queue_max: int, queue_timeout_s: float, per_key: int
    ) -> None:
        self.max_in_flight = max_in_flight
        self.queue_max = queue_max
        self.queue_timeout_s = queue_timeout_s
        self.per_key = per_key
        self.in_flight = 0
        self._line = trio.lowlevel.ParkingLot()
        self._keys: dict[str, int] = {}
        self._refused_full = self._refused_timeout = self._refused_key = 0

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

    async def acquire(self) -> bool:
        """A worker slot, at once or after waiting in line; False: refused (full or late)."""
        if self.in_flight < self.max_in_flight and not self._line:
            self.in_flight += 1
            return True
        if len(self._line) >= self.queue_max:
            self._refused_full += 1
            return False
        with trio.move_on_after(self.queue_timeout_s):
            await self._line.park()  # release() hands its slot over: in_flight unchanged
            return True
        self._refused_timeout += 1
        return False

    def release(self) -> None:
        if not self._line.unpark(count=1):
            self.in_flight -= 1


__all__ = ["SlotStats", "Slots"]
