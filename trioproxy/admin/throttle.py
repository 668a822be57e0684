"""How many failed authentications the admin port lets a client try (pure).

Failures (a wrong password or admin key) are counted per subject over a sliding window:
``addr:<client address>`` for every failure on the admin port (dashboard sign-ins, admin
keys sent to the admin API or ``/metrics``), ``user:<name>`` for a user name from all
addresses, ``user:<name>@<address>`` for a user name from one address. At a subject's limit
its attempts are refused (429) until the oldest failure leaves the window.

The counts live in the admin store (every worker and instance sees them); :class:`FailureLog`
keeps them in the process as well, for when the store does not answer and for ``/metrics``
served without the dashboard.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SUBJECTS = 4096
"""Subjects a :class:`FailureLog` keeps; past it the one that failed least recently goes."""
MAX_TIMES = 1024
"""Failure times a :class:`FailureLog` keeps per subject (its newest)."""


@dataclass(frozen=True, slots=True)
class Throttle:
    attempts: int = 10
    """Failed attempts allowed per subject (user name, client address) per window."""
    window_s: float = 300.0

    def retry_after(
        self, failures: int, oldest: float | None, now: float, checking: int = 0
    ) -> int | None:
        """Seconds until the next attempt may be tried, or None if it may be tried now.
        ``checking``: the subject's attempts being verified right now, each a failure to be:
        guesses sent side by side are counted before their credentials are checked (else all
        of them passed the count, then failed)."""
        if failures + checking < self.attempts:
            return None
        if failures < self.attempts or oldest is None:
            return 1  # the ones being checked decide; ask again in a second
        return max(1, math.ceil(oldest + self.window_s - now))


class FailureLog:
    """Failure times per subject in this process, forgotten after the window (at most
    :data:`MAX_SUBJECTS` subjects, :data:`MAX_TIMES` times each)."""

    def __init__(self, max_subjects: int = MAX_SUBJECTS) -> None:
        self.max_subjects = max_subjects
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def record(self, subjects: Iterable[str], now: float) -> None:
        for subject in subjects:
            times = self._times.pop(subject, None)
            if times is None:
                times = deque(maxlen=MAX_TIMES)
            times.append(now)
            self._times[subject] = times  # the most recent failure last
            while len(self._times) > self.max_subjects:
                self._times.popitem(last=False)

    def seen(self, subject: str, since: float) -> tuple[int, float] | None:
        """(count, oldest time) of the subject's failures since ``since``, or None."""
        times = self._times.get(subject)
        if times is None:
            return None
        while times and times[0] < since:
            times.popleft()
        if not times:
            del self._times[subject]
            return None
        return len(times), times[0]


__all__ = ["MAX_SUBJECTS", "FailureLog", "Throttle"]
