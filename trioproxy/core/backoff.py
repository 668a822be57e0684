"""Retry delays: the one backoff policy of the project (Redis reconnects, service restarts,
database and index retries, webhook retries).

Exponential from ``initial`` doubling to ``maximum``; with ``jitter`` each delay is drawn in
[50 %, 100 %] of that value so that many processes retrying one server spread out. Pure: the
randomness is an input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial: float
    maximum: float
    jitter: bool = True

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0: the first retry)."""
        base = min(self.maximum, self.initial * 2 ** min(failures, 60))
        if not self.jitter:
            return base
        return base * (rng or random).uniform(0.5, 1.0)


@dataclass(slots=True)
class Backoff:
    """The retry state of one loop: :meth:`next` after a failure, :meth:`reset` on success."""

    policy: BackoffPolicy
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next(self) -> float:
        delay = self.policy.delay(self.failures, self.rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


__all__ = ["Backoff", "BackoffPolicy"]
