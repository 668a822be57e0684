"""Claims on budgets and the worst-case cost of a request. Pure; no I/O.

Money is integer micro-USD everywhere (1 USD = 1,000,000 µUSD), so sums never
drift. What a call costs is :func:`trioproxy.core.billing.bill`, the one
billing step; this module only bounds it (worst case, floor) for reservations.

A :class:`Claim` asks a store to add ``amount`` to ``bucket`` only if the
bucket's usage (spent + reserved) plus ``amount`` stays within ``limit``.
``window_s`` set means a sliding-window bucket (exact log), else a calendar
period counter that may be dropped after ``expires_at``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from trioproxy.config.model import ModelConfig
from trioproxy.config.pricing import prices_of
from trioproxy.core.billing import MICROS_PER_USD, worst_case_micros
from trioproxy.core.tokens import answer_cap


@dataclass(frozen=True, slots=True)
class Claim:
    bucket: str
    amount: int
    limit: int
    window_s: float | None = None
    """Sliding window length; None for a calendar-period counter."""
    expires_at: float | None = None
    """Period end (epoch seconds): the bucket is not needed after it."""
    limit_ref: tuple[str, str] | None = None
    """``(team, "daily" | "monthly")``: a run-time limit the store may hold for this bucket.
    When it holds one, the atomic check uses it instead of ``limit`` (see ``budget.store``),
    so a limit changed anywhere applies from the next admission on."""


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a claim did not fit: the first bucket (in claim order) without room."""

    bucket: str
    used: int
    """Spent + reserved at the time of the check."""
    limit: int
    amount: int
    retry_after: float | None
    """Seconds until the amount fits (window expiry or period end); None = never."""


@dataclass(frozen=True, slots=True)
class WorstCase:
    usd_micros: int
    tokens: int


@functools.lru_cache(maxsize=1024)
def usd_to_micros(usd: float) -> int:
    """A configured USD amount (limit) as µUSD, from its decimal text, rounded down
    (remembered: a handful of configured amounts, converted on every admission)."""
    return math.floor(Fraction(Decimal(repr(usd))) * MICROS_PER_USD)


def worst_case(
    prompt_tokens_bound: int, max_tokens: int | None, models: Iterable[ModelConfig], n: int = 1
) -> WorstCase:
    """The most a request can cost on any model that may serve it.

    ``prompt_tokens_bound`` must be a hard upper bound (``core.input_bound.input_bound``).
    Output is ``max_tokens`` capped at each model's ``max_output_tokens`` (the model's when
    the request names none: :func:`~trioproxy.core.tokens.answer_cap`, the cap the upstream
    request carries), times ``n`` answers.
    Each model is priced separately and the maximum is taken, so the result is
    the cost on the most expensive model for *this* request; every prompt token
    is priced in the model's most expensive input bucket (a 1-hour cache write
    on Anthropic), since the provider decides what is cached.
    """
    usd = tokens = 0
    seen = False
    for m in models:
        seen = True
        out = answer_cap(max_tokens, m.max_output_tokens) * n
        usd = max(usd, worst_case_micros(prices_of(m), prompt_tokens_bound, out))
        tokens = max(tokens, prompt_tokens_bound + out)
    if not seen:
        raise ValueError("worst_case needs at least one model")
    return WorstCase(usd, tokens)


def initial_reservation(worst: int, cap: int | None, floor: int = 0) -> int:
    """``min(worst, cap)``, but never below ``floor`` (e.g. the prompt's cost)."""
    if cap is None:
        return worst
    return min(worst, max(cap, floor))


def scaled(amount: int, part: int, whole: int) -> int:
    """``amount * part / whole`` rounded up (tokens reserved in step with µUSD)."""
    if whole <= 0:
        return amount
    return min(amount, -(-amount * part // whole))


def merge_claims(claims: Iterable[Claim]) -> list[Claim]:
    """One claim per bucket (amounts added), first-seen order kept."""
    merged: dict[str, Claim] = {}
    for c in claims:
        prev = merged.get(c.bucket)
        if prev is None:
            merged[c.bucket] = c
        else:
            merged[c.bucket] = Claim(
                c.bucket, prev.amount + c.amount, prev.limit, prev.window_s, prev.expires_at,
                prev.limit_ref,
            )  # fmt: skip
    return list(merged.values())


def distribute(actual: int, held: Sequence[int]) -> list[int]:
    """Split ``actual`` over holds taken in order, earliest first.

    Earlier holds are kept whole until ``actual`` is used up, later ones shrink
    (lowering never breaks a limit). Any excess over the total held goes to the
    last hold: that is consumption the reservation did not cover.
    """
    out: list[int] = []
    left = actual
    for amount in held:
        take = min(amount, max(0, left))
        out.append(take)
        left -= take
    if out and left > 0:
        out[-1] += left
    return out


__all__ = [
    "MICROS_PER_USD",
    "Claim",
    "Denial",
    "WorstCase",
    "distribute",
    "initial_reservation",
    "merge_claims",
    "scaled",
    "usd_to_micros",
    "worst_case",
]
