"""How long a refused caller should wait (``Retry-After``), from what the worker observes (pure).

A worker that is full (every in-flight slot taken, the line full or a request's wait in it
over) tells the caller when to come back. A constant says nothing about the load: under
overload every refused caller returns after the same second and is refused again. Instead,
the answer is the time until a slot could be free for this caller:

    (waiting + recently refused + 1) / drain rate

* the *drain rate* is how fast slots free up (releases per second, observed);
* *waiting* is the line ahead of the caller; *recently refused* are the callers refused in
  about the last :data:`WINDOW_S` seconds: they come back too, so they are ahead as well;
* rounded up to whole seconds (the header's unit) and bounded to ``1 ..
  server.retry_after_max_s``. When nothing finished for a long time (long streams, or
  nothing observed yet) the rate tends to zero and the answer to the bound.

Rates are exponentially decayed counts (:class:`DecayedCount`): O(1) per event, no timers,
time an explicit input (``now``, the trio clock in :mod:`trioproxy.pipeline.slots`), so
the tests run on exact virtual times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 1.0
"""The time scale of the observed rates: a count decays by ``e`` every ``WINDOW_S``."""


@dataclass(slots=True)
class DecayedCount:
    """Events counted with an exponential decay of time constant ``window`` seconds: at a
    steady ``r`` events per second the value tends to ``r * window`` (the events of about the
    last window), and ``rate(now)`` to ``r``."""

    window: float = WINDOW_S
    value: float = 0.0
    at: float = 0.0

    def _decayed(self, now: float) -> float:
        if self.value == 0.0 or now <= self.at:
            return self.value
        return self.value * math.exp((self.at - now) / self.window)

    def add(self, now: float, n: float = 1.0) -> None:
        self.value = self._decayed(now) + n
        self.at = max(self.at, now)

    def count(self, now: float) -> float:
        """About how many events happened in the last ``window`` seconds."""
        return self._decayed(now)

    def rate(self, now: float) -> float:
        """Events per second, observed."""
        return self._decayed(now) / self.window


def retry_after_s(*, waiting: int, refused_recently: float, drain_per_s: float,
                  max_s: int) -> int:  # fmt: skip
    """Whole seconds until a slot could be free for a caller refused now, in ``1..max_s``:
    the callers ahead of it (``waiting`` in line, ``refused_recently``: they come back too,
    and this one) over the rate slots free up (``drain_per_s``)."""
    top = max(1, max_s)
    if drain_per_s <= 0.0:
        return top
    wait = (waiting + refused_recently + 1) / drain_per_s
    if wait >= top:
        return top
    return max(1, math.ceil(wait))


__all__ = ["WINDOW_S", "DecayedCount", "retry_after_s"]
