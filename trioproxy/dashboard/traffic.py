"""Traffic per target over the last 5 and 60 minutes, from the per-minute counters (pure fold).

Rows of :mod:`trioproxy.ledger.minutes` (attempts per minute, target, hedge role, outcome and
error kind, with latency and TTFB histograms) summed over each window; percentiles from the
summed histograms. The counters come with the ledger's batches, so the last seconds may lag by
one batch interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from trioproxy.errors import ErrorKind, FaultDomain
from trioproxy.ledger.minutes import BUCKETS, MinuteRow, percentile

WINDOWS_MIN = (5, 60)


@dataclass
class Traffic:
    target: str
    minutes: int
    seconds: float
    """How long the window really is (its first minute to now)."""
    attempts: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Failed attempts by error kind: the target's faults (what its error rate counts)."""
    caller_errors: dict[str, int] = field(default_factory=dict)
    """Attempts that failed on the caller's request (``invalid_request``: e.g. ``n`` > 1 to an
    Anthropic target): not the target's fault, shown apart."""
    fallbacks: int = 0
    fallbacks_won: int = 0
    hedges_won: int = 0
    hedges_lost: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    ttfb: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, r: MinuteRow) -> None:
        self.attempts += r.attempts
        if r.error_kind:
            into = self.caller_errors if _callers(r.error_kind) else self.errors
            into[r.error_kind] = into.get(r.error_kind, 0) + r.attempts
        if r.role == "fallback":
            self.fallbacks += r.attempts
            self.fallbacks_won += r.attempts if r.outcome == "won" else 0
        elif r.role == "hedge":
            self.hedges_won += r.attempts if r.outcome == "won" else 0
            self.hedges_lost += r.attempts if r.outcome == "lost" else 0
        for i, n in enumerate(r.latency):
            self.latency[i] += n
        for i, n in enumerate(r.ttfb):
            self.ttfb[i] += n

    @property
    def rate(self) -> float:
        """Attempts per second."""
        return self.attempts / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float | None:
        """Faults per attempt the target was judged on (not those its caller failed)."""
        judged = self.attempts - sum(self.caller_errors.values())
        return self.error_count / judged if judged > 0 else None

    def latency_ms(self, q: float) -> float | None:
        return percentile(self.latency, q)

    def ttfb_ms(self, q: float) -> float | None:
        return percentile(self.ttfb, q)


def _callers(kind: str) -> bool:
    """Whether an error kind is the caller's fault (an unknown one counts as the target's)."""
    try:
        return ErrorKind(kind).domain is FaultDomain.CALLER
    except ValueError:
        return False


def fold(
    rows: Iterable[MinuteRow], targets: Sequence[str], now: float,
    windows: Sequence[int] = WINDOWS_MIN,
) -> dict[str, list[Traffic]]:  # fmt: skip
    """Per target (every configured one, and any other seen), one :class:`Traffic` a window."""
    this_minute = int(now // 60)
    rows = list(rows)
    names = sorted(set(targets) | {r.target for r in rows})
    out: dict[str, list[Traffic]] = {}
    for name in names:
        out[name] = [Traffic(name, w, max(now - (this_minute - w + 1) * 60, 1.0)) for w in windows]
    for r in rows:
        age = this_minute - r.minute
        for t in out[r.target]:
            if 0 <= age < t.minutes:
                t.add(r)
    return out


__all__ = ["WINDOWS_MIN", "Traffic", "fold"]
