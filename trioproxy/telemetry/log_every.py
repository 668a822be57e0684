"""One log line per interval for a failure that repeats per record (a full disk)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

LOG_EVERY_S = 10.0


class LogEvery:
    """Says when the next line of a repeating failure is due, and how many were not logged
    since the last one: a full state disk logged ~4 error lines per request (36,000 in 5 s
    from two workers), past journald's per-unit limit, which then dropped the unit's other
    lines too. The counts stay in the metrics."""

    def __init__(
        self, interval_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next = -math.inf
        self._unlogged = 0

    def due(self) -> int | None:
        """None: not now (this one is counted); else how many were skipped before it."""
        now = self._clock()
        if now < self._next:
            self._unlogged += 1
            return None
        self._next = now + self.interval_s
        skipped, self._unlogged = self._unlogged, 0
        return skipped


__all__ = ["LOG_EVERY_S", "LogEvery"]
