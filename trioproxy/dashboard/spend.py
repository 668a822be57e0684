"""Spend over a date range, in the configured time zone, from the day roll-up (pure).

Rows of :mod:`trioproxy.ledger.days` (local day, value, team, status); the chosen dimension
(team, feature, user, key, model, route) gives the stacks. Refusals and errors per team come
from the status.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trioproxy.ledger import days
from trioproxy.ledger.days import DayRow
from trioproxy.ledger.reads import DayCells

BY = ("team", "feature", "user", "key", "model", "route")
MAX_DAYS = 92
DEFAULT_DAYS = 30
STACKS = 8
"""The chart shows this many series; the rest are summed as ``other``."""


class RangeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Range:
    start: dt.date
    end: dt.date
    """Inclusive."""

    @property
    def days(self) -> list[dt.date]:
        n = (self.end - self.start).days + 1
        return [self.start + dt.timedelta(days=i) for i in range(n)]


def parse_range(start: str | None, end: str | None, today: dt.date) -> Range:
    """``YYYY-MM-DD`` bounds (inclusive); default the last 30 days; at most 92 days."""
    try:
        hi = dt.date.fromisoformat(end) if end else today
        lo = dt.date.fromisoformat(start) if start else hi - dt.timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise RangeError("dates must be YYYY-MM-DD") from None
    if lo > hi:
        raise RangeError("the start date is after the end date")
    if (hi - lo).days + 1 > MAX_DAYS:
        raise RangeError(f"at most {MAX_DAYS} days at a time")
    return Range(lo, hi)


@dataclass
class Totals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    cache_saved_usd: float = 0.0
    """Saved by the providers' prompt caches (``saved_usd``: by the gateway's cache)."""
    refused: int = 0
    """Of ``requests``, those refused with a 429 (budgets and rate limits); counted from rows
    that keep the status only (others read status 0)."""

    def add(self, r: DayRow) -> None:
        self.requests += r.requests
        if r.status == 429:
            self.refused += r.requests
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.cost_usd += r.cost_usd
        self.saved_usd += r.saved_usd
        self.cache_saved_usd += r.cache_saved_usd


@dataclass
class Outcomes:
    ok: int = 0
    refused: int = 0
    """429: budgets and rate limits."""
    client: int = 0
    """Other 4xx (bad requests, unknown models...)."""
    errors: int = 0
    """5xx: providers or the gateway failed."""
    cancelled: int = 0
    """499: the caller went away."""

    def add(self, status: int, n: int) -> None:
        if status == 429:
            self.refused += n
        elif status == 499:
            self.cancelled += n
        elif status >= 500:
            self.errors += n
        elif status >= 400:
            self.client += n
        else:
            self.ok += n


@dataclass
class Spend:
    range: Range
    by: str
    days: list[dt.date]
    by_value: dict[str, Totals] = field(default_factory=dict)
    per_day: dict[tuple[dt.date, str], Totals] = field(default_factory=dict)
    """Per day and value: for the chart's values (the page) or every value (the CSV)."""
    day_totals: dict[dt.date, Totals] = field(default_factory=dict)
    outcomes: dict[str, Outcomes] = field(default_factory=dict)
    """Per team."""
    total: Totals = field(default_factory=Totals)
    cells: list[DayCells] = field(default_factory=list)
    """Every value per day, as the database summed them (the CSV: written as they are)."""

    def top(self, n: int = STACKS) -> list[str]:
        ranked = sorted(self.by_value, key=lambda v: (-self.by_value[v].cost_usd, v))
        return ranked[:n]

    def add_values(self, rows: Iterable[DayRow]) -> None:
        """Totals per value over the range (rows summed per value)."""
        for r in rows:
            self.by_value.setdefault(r.value, Totals()).add(r)
            self.total.add(r)

    def add_days(self, rows: Iterable[DayRow]) -> None:
        """Per day and value (rows summed per day and value)."""
        for r in rows:
            if self.range.start <= r.day <= self.range.end:
                self.per_day.setdefault((r.day, r.value), Totals()).add(r)

    def add_day_totals(self, rows: Iterable[DayRow]) -> None:
        """Per day, every value (rows summed per day)."""
        for r in rows:
            if self.range.start <= r.day <= self.range.end:
                self.day_totals.setdefault(r.day, Totals()).add(r)

    def add_outcomes(self, rows: Iterable[DayRow]) -> None:
        """Per team and status (the team dimension's rows summed per value and status)."""
        for r in rows:
            self.outcomes.setdefault(r.value, Outcomes()).add(r.status, r.requests)

    def series(self, n: int = STACKS) -> dict[str, list[float]]:
        """Cost per day for the top ``n`` values, the rest (day total - top) as ``other``."""
        top = self.top(n)
        out = {v: [0.0] * len(self.days) for v in top}
        index = {d: i for i, d in enumerate(self.days)}
        for (day, value), t in self.per_day.items():
            i = index.get(day)
            if i is not None and value in out:
                out[value][i] += t.cost_usd
        rest = [0.0] * len(self.days)
        for day, t in self.day_totals.items():
            i = index.get(day)
            if i is not None:
                rest[i] = t.cost_usd - sum(out[v][i] for v in top)
        rest = [r if r > 1e-9 else 0.0 for r in rest]  # float noise of equal sums
        if any(rest):
            out["other"] = rest
        return out


@dataclass(frozen=True, slots=True)
class Projection:
    team: str
    month_to_date_usd: float
    projected_usd: float
    limit_usd: float | None

    @property
    def over(self) -> bool:
        return self.limit_usd is not None and self.projected_usd > self.limit_usd


def project(
    month_to_date: Mapping[str, float], limits: Mapping[str, float | None], now: dt.datetime
) -> list[Projection]:
    """Month-end spend at the month's average rate so far (``now`` in the local zone)."""
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elapsed = max((now - start).total_seconds() / 86_400, 1 / 24)  # at least one hour
    teams = sorted(set(month_to_date) | set(limits))
    return [
        Projection(t, month_to_date.get(t, 0.0),
                   month_to_date.get(t, 0.0) * days_in_month / elapsed, limits.get(t))
        for t in teams
    ]  # fmt: skip


CSV_HEADER = ("day", "by", "value", "requests", "input_tokens", "output_tokens", "cost_usd",
              "saved_usd")  # fmt: skip


_FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters a spreadsheet may read as the start of a formula (OWASP's list)."""
_QUOTE = frozenset(',"\r\n')


@functools.lru_cache(maxsize=1024)
def _iso(day: int) -> str:
    return days.day_of_number(day).isoformat()


def csv_cell(value: str) -> str:
    """A text cell as ``csv`` writes it (quoted when it holds a comma, quote or line break),
    never read as a formula by a spreadsheet."""
    if value[:1] in _FORMULA:
        value = "'" + value
    return value if _QUOTE.isdisjoint(value) else '"' + value.replace('"', '""') + '"'


def to_csv(spend: Spend) -> str:
    """Every value per local day (:attr:`Spend.cells`), one CSV row each: written as plain
    lines (``csv.writer`` over 15,000 tuples cost twice as much)."""
    by = spend.by
    cells: dict[str, str] = {}
    lines = [",".join(CSV_HEADER) + "\n"]
    for day, value, requests, inp, outp, cost, saved in spend.cells:
        cell = cells.get(value)
        if cell is None:
            cell = cells[value] = csv_cell(value)
        lines.append(f"{_iso(day)},{by},{cell},{requests},{inp},{outp},"
                     f"{cost / 1e6:.6f},{saved / 1e6:.6f}\n")  # fmt: skip
    return "".join(lines)


__all__ = [
    "BY",
    "CSV_HEADER",
    "Outcomes",
    "Projection",
    "Range",
    "RangeError",
    "Spend",
    "csv_cell",
    "parse_range",
    "project",
    "to_csv",
]
