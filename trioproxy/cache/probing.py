"""Collision probing: many near-threshold semantic misses from one API key.

Someone mapping where the cache's boundary lies (to plant or to read entries) sends prompts
that land just short of a hit: cosine within ``margin`` below the floor, or above it but
refused by the guard or the verifier. :class:`ProbeTracker` counts those per key in a
sliding window (time is an input) and flags a key once it passes ``limit`` in the window;
flags are counted, exported as a metric, and logged. Bounded: at most ``max_keys`` keys are
tracked (least recently seen dropped), at most ``limit`` timestamps per key.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

PROBE_MARGIN = 0.05
"""How far below the floor a miss still counts as near the threshold."""
PROBE_WINDOW_S = 60.0
PROBE_LIMIT = 30
"""Near-threshold misses per key per window before the key is flagged."""


@dataclass(slots=True)
class ProbeTracker:
    window_s: float = PROBE_WINDOW_S
    limit: int = PROBE_LIMIT
    max_keys: int = 10_000
    near_misses: int = 0
    """Near-threshold misses seen, all keys."""
    flags: Counter[str] = field(default_factory=Counter)
    """Times each key crossed ``limit`` within a window."""
    _seen: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def observe(self, key: str, now: float) -> bool:
        """Count one near-threshold miss of ``key``; True when this one flags it."""
        self.near_misses += 1
        times = self._seen.pop(key, None) or deque(maxlen=self.limit)
        self._seen[key] = times
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        times.append(now)
        if len(times) >= self.limit:
            times.clear()
            self.flags[key] += 1
            return True
        return False


__all__ = ["PROBE_LIMIT", "PROBE_MARGIN", "PROBE_WINDOW_S", "ProbeTracker"]
