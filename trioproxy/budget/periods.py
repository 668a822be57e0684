"""Calendar periods and sliding windows: pure arithmetic on explicit ``now``.

Team USD budgets run on calendar periods (a day, a month) in the configured
time zone: a Europe/Berlin daily budget resets at local midnight, whatever the
UTC offset that day. A period is named by its local date (``2026-11-22``) or
month (``2026-11``) and ends at the next local midnight / first of the month,
which is also when its bucket may be dropped.

Per-user token budgets are sliding windows kept as an *exact log* of
``(ts, amount)`` entries: the usage at ``now`` is the sum of the entries with
``ts > now - window_s``. No approximation; :func:`window_retry_after` says when
enough of the window will have expired for a given amount to fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Period:
    kind: PeriodKind
    name: str
    """``2026-11-22`` for a day, ``2026-11`` for a month (local calendar)."""
    start: float
    """Epoch seconds of the local period start."""
    end: float
    """Epoch seconds of the next period's start (exclusive)."""


_latest: dict[tuple[PeriodKind, ZoneInfo], Period] = {}
"""The period last computed per kind and zone: every request of a day asks for the same."""


def period_at(kind: PeriodKind, now: float, tz: ZoneInfo) -> Period:
    """The local calendar day or month that contains ``now`` (epoch seconds)."""
    latest = _latest.get((kind, tz))
    if latest is not None and latest.start <= now < latest.end:
        return latest
    period = _compute(kind, now, tz)
    _latest[(kind, tz)] = period
    return period


def _compute(kind: PeriodKind, now: float, tz: ZoneInfo) -> Period:
    local = datetime.fromtimestamp(now, tz)
    if kind == "day":
        start = datetime(local.year, local.month, local.day, tzinfo=tz)
        nxt = start.date() + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
        name = f"{start:%Y-%m-%d}"
    else:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        end = datetime(year, month, 1, tzinfo=tz)
        name = f"{start:%Y-%m}"
    return Period(kind, name, start.timestamp(), end.timestamp())


def window_usage(entries: Iterable[tuple[float, int]], now: float, window_s: float) -> int:
    """Sum of the entries still inside the window ``(now - window_s, now]``."""
    cutoff = now - window_s
    return sum(amount for ts, amount in entries if ts > cutoff)


def window_retry_after(
    entries: Iterable[tuple[float, int]], now: float, window_s: float, limit: int, amount: int
) -> float | None:
    """Seconds until ``amount`` more fits under ``limit``; 0 if it fits now.

    None if it can never fit (``amount > limit``). Entries still pending
    settlement count at their reserved amount, so the answer is conservative.
    """
    if amount > limit:
        return None
    cutoff = now - window_s
    live = sorted((ts, a) for ts, a in entries if ts > cutoff)
    used = sum(a for _, a in live)
    if used + amount <= limit:
        return 0.0
    for ts, a in live:
        used -= a
        if used + amount <= limit:
            # the entry leaves the window once now' - window_s >= ts
            return max(0.0, ts + window_s - now)
    raise AssertionError("unreachable: an empty window fits amount <= limit")


def retry_after_header(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header, never early."""
    return max(1, math.ceil(seconds))


__all__ = [
    "Period",
    "PeriodKind",
    "period_at",
    "retry_after_header",
    "window_retry_after",
    "window_usage",
]
