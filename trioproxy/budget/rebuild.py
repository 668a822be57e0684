"""Rebuilding a lost budget state from the ledger: the maths. Pure; ``now`` is an input.

A shared store that lost its state (see :class:`~trioproxy.budget.store.StateLost`) is
rebuilt from two reads of the ledger's *request* records, split at an hour boundary
``split`` (:func:`span`):

* before ``split``, the hourly roll-up (``ledger_hourly``: kept for ever, exact per hour);
* from ``split`` on, the raw records (exact time stamps and request ids), plus the
  fragment of a period that starts inside an hour (time zones with half-hour offsets).

``split`` lies ``lease_s + recent_s`` before ``now``, or ``recent_s`` before the earliest
admission in the rebuilding instance's journal if that is earlier (each extend of a metered
stream renews its lease, so a request may be held far longer than ``lease_s``; a record is
dated at its request's start): every request that may still be settling (in flight, or
settled so recently that its record may not be in the ledger yet) has its raw record, if
any, after it. Those request ids are the *counted* set: a settle of such a request that
arrives after the rebuild changes nothing, because the ledger's amount, already counted,
wins (:mod:`trioproxy.budget.recovery`). The journals of *other* instances are not known
here: a request another instance held longer than ``lease_s`` and settled within
``recent_s`` before the loss is read from the roll-up and replayed too (counted twice:
stricter, never looser) when its record reached the ledger before the rebuild read it.

What comes back, per bucket the gate claims:

* ``team:<t>:day:<d>`` / ``team:<t>:month:<m>``: the exact sum of the period's request
  records (µUSD), for every team in the ledger;
* ``user:<u>`` token windows, for the users with a window in force (:class:`Windows`: the
  config's as reloaded last, under the run-time overrides the rebuild writes back): from the roll-up
  one entry per hour, dated at the hour's end (a window can hold an hour's tokens up to
  an hour longer than the exact log would: stricter, never looser), and from the raw
  records one entry per request at its own time. Tokens are the request record's (the
  serving attempt's); tokens a losing hedge consumed are not in it.

Not rebuilt: end-user windows and per-key RPM/TPM (one-minute windows): they start empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from trioproxy.budget import buckets
from trioproxy.budget.periods import Period, period_at
from trioproxy.budget.policy import DEFAULT_USER, Policy
from trioproxy.config.model import UserWindow

HOUR = 3600


@dataclass(frozen=True, slots=True)
class HourSpend:
    """One row of the hourly roll-up of request records, per team or per user."""

    hour: int
    """Unix hour (ts // 3600)."""
    name: str
    """The team or the user."""
    cost_micros: int
    tokens: int


@dataclass(frozen=True, slots=True)
class RequestSpend:
    """One raw request record."""

    request_id: str
    ts: float
    team: str
    user: str
    cost_micros: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Span:
    """What to read from the ledger."""

    first_hour: int
    """Roll-up hours per team ``[first_hour, split // 3600)`` (the month)."""
    window_first_hour: int
    """Roll-up hours per user ``[window_first_hour, split // 3600)`` (the longest window)."""
    split: int
    """Raw records from here on (epoch seconds, a whole hour)."""
    fragments: tuple[tuple[float, float], ...]
    """Raw records in these ``[lo, hi)`` ranges too: periods starting inside an hour."""


@dataclass(frozen=True, slots=True)
class Counter:
    bucket: str
    amount: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class WindowItem:
    bucket: str
    member: str
    ts: float
    amount: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Rebuilt:
    counters: list[Counter]
    windows: list[WindowItem]
    counted: list[str]
    """Request ids read from the raw records (their settles must not count again)."""


@dataclass(frozen=True, slots=True)
class Windows:
    """The users' token windows in force, as the gate finds them (``Holds.of``): the
    config's (``*``: every user without one of their own) under the run-time overrides
    (:class:`~trioproxy.budget.policy.Policy`: a user's own, the default ``*``, or none)."""

    configured: Mapping[str, UserWindow] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)

    def of(self, user: str) -> UserWindow | None:
        configured = self.configured.get(user) or self.configured.get(DEFAULT_USER)
        return self.policy.window(user, configured)

    @property
    def longest(self) -> float:
        """The longest window any user may have (0: none has one)."""
        every = (*self.configured.values(), *self.policy.windows.values())
        return max((w.window_s for w in every if w is not None), default=0)


def _windows(users: Windows | Mapping[str, UserWindow]) -> Windows:
    return users if isinstance(users, Windows) else Windows(users)


def _periods(now: float, tz: ZoneInfo) -> tuple[Period, Period]:
    return period_at("day", now, tz), period_at("month", now, tz)


def _ceil_hour(t: float) -> int:
    return math.ceil(t / HOUR) * HOUR


def span(
    now: float, tz: ZoneInfo, users: Windows | Mapping[str, UserWindow], *, lease_s: float,
    recent_s: float, oldest: float | None = None,
) -> Span:  # fmt: skip
    """``users``: the windows in force (a mapping: the config's alone). ``oldest``: the
    earliest admission of a reservation the rebuild will replay."""
    day, month = _periods(now, tz)
    longest = _windows(users).longest
    held_since = now - lease_s if oldest is None else min(now - lease_s, oldest)
    split = math.floor((held_since - recent_s) / HOUR) * HOUR
    fragments = tuple(
        (p.start, float(min(_ceil_hour(p.start), split)))
        for p in {month.start: month, day.start: day}.values()
        if p.start % HOUR and p.start < split
    )
    first = math.floor(month.start / HOUR)
    return Span(first, math.floor((now - longest) / HOUR), split, fragments)


def rebuild(
    now: float,
    tz: ZoneInfo,
    users: Windows | Mapping[str, UserWindow],
    at: Span,
    team_hours: Iterable[HourSpend],
    user_hours: Iterable[HourSpend],
    requests: Iterable[RequestSpend],
) -> Rebuilt:
    """The current periods' spend and the users' token windows at ``now``, from the roll-up
    per team (the month's hours) and per user (the longest window's), and raw records."""
    periods = _periods(now, tz)
    windows_in_force = _windows(users)
    sums: dict[str, int] = {}
    ends: dict[str, float] = {}
    windows: list[WindowItem] = []

    def add(p: Period, team: str, amount: int) -> None:
        bucket = buckets.team_period(team, p.kind, p.name)
        sums[bucket] = sums.get(bucket, 0) + amount
        ends[bucket] = p.end

    for h in team_hours:
        start = h.hour * HOUR
        if start + HOUR <= at.split:  # later hours: the raw records
            for p in periods:
                if start >= p.start:
                    add(p, h.name, h.cost_micros)
    for h in user_hours:
        w = windows_in_force.of(h.name)
        end = (h.hour + 1) * HOUR
        if w is not None and h.tokens and end <= at.split and end > now - w.window_s:
            bucket = buckets.user_window(h.name)
            windows.append(WindowItem(bucket, f"~h{h.hour}", end, h.tokens, w.window_s))
    counted: list[str] = []
    seen: set[str] = set()
    for r in requests:
        if r.request_id in seen:
            continue
        seen.add(r.request_id)
        recent = r.ts >= at.split
        for p in periods:
            if r.ts >= p.start and (recent or r.ts < _ceil_hour(p.start)):
                add(p, r.team, r.cost_micros)
        if not recent:
            continue
        counted.append(r.request_id)
        w = windows_in_force.of(r.user)
        if w is not None and r.tokens and r.ts > now - w.window_s:
            bucket = buckets.user_window(r.user)
            item = WindowItem(bucket, f"~q{r.request_id}", r.ts, r.tokens, w.window_s)
            windows.append(item)
    counters = [Counter(b, amount, ends[b]) for b, amount in sums.items()]
    return Rebuilt(counters, windows, counted)


__all__ = [
    "Counter",
    "HourSpend",
    "Rebuilt",
    "RequestSpend",
    "Span",
    "WindowItem",
    "Windows",
    "rebuild",
    "span",
]
