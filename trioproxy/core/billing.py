"""The one billing step: ``usage + prices -> Bill``, in integer µUSD. Pure.

Money is integer micro-USD everywhere (1 USD = 1,000,000 µUSD). A price in USD
per 1M tokens is exactly µUSD per token; prices are exact fractions made from
their decimal text (``0.15`` is 15/100, not the nearest float). A bill is the
exact sum over the buckets, rounded *up* once to the next µUSD: budgets settle
it, the ledger stores it, the cache stores it and a cache hit records it as
saved.

``no_cache_micros`` prices the same tokens as if no provider prompt cache
existed (every prompt token at the input price); the difference is what the
provider's cache saved (negative when cache writes cost more than reads saved).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from trioproxy.core.types import Usage

MICROS_PER_USD = 1_000_000


@functools.lru_cache(maxsize=1024)
def per_mtok(usd: float | str) -> Fraction:
    """A USD-per-1M-tokens price (its decimal text) as exact µUSD per token."""
    return Fraction(Decimal(usd if isinstance(usd, str) else repr(usd)))


@dataclass(frozen=True, slots=True)
class Prices:
    """µUSD per token for every bucket (= USD per 1M tokens)."""

    input: Fraction
    output: Fraction
    cache_read: Fraction
    cache_write_5m: Fraction
    cache_write_1h: Fraction
    _scaled: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """The five prices over one common denominator (its last item): :func:`bill` in integers."""

    def __post_init__(self) -> None:
        prices = (self.input, self.output, self.cache_read, self.cache_write_5m,
                  self.cache_write_1h)  # fmt: skip
        den = math.lcm(*(Fraction(p).denominator for p in prices))
        scaled = tuple(int(Fraction(p) * den) for p in prices)
        object.__setattr__(self, "_scaled", (*scaled, den))

    @property
    def max_input(self) -> Fraction:
        """The most expensive way a prompt token can be billed (worst-case reservations)."""
        return max(self.input, self.cache_read, self.cache_write_5m, self.cache_write_1h)

    @property
    def min_input(self) -> Fraction:
        """The cheapest way a prompt token can be billed (what a prompt surely costs)."""
        return min(self.input, self.cache_read, self.cache_write_5m, self.cache_write_1h)


@dataclass(frozen=True, slots=True)
class Bill:
    micros: int
    """What the call costs, rounded up to the µUSD."""
    no_cache_micros: int
    """The same tokens with every prompt token at the input price, rounded up."""

    @property
    def cache_savings_micros(self) -> int:
        """What the provider's prompt cache saved (negative: writes cost more than reads saved)."""
        return self.no_cache_micros - self.micros

    def __add__(self, other: Bill) -> Bill:
        return Bill(self.micros + other.micros, self.no_cache_micros + other.no_cache_micros)


NO_BILL = Bill(0, 0)


def bill(usage: Usage, prices: Prices) -> Bill:
    """Price every bucket of ``usage``; reasoning is inside output and not billed twice."""
    p_in, p_out, p_read, p_w5m, p_w1h, den = prices._scaled  # exact: integers over den
    output = usage.output_tokens * p_out
    exact = (
        usage.input_tokens * p_in
        + usage.cache_read_tokens * p_read
        + usage.cache_write_5m_tokens * p_w5m
        + usage.cache_write_1h_tokens * p_w1h
        + output
    )
    no_cache = usage.prompt_tokens * p_in + output
    return Bill(-(-exact // den), -(-no_cache // den))  # rounded up


def worst_case_micros(prices: Prices, prompt_tokens: int, output_tokens: int) -> int:
    """The most ``prompt_tokens`` in and ``output_tokens`` out can cost: every prompt
    token in the most expensive input bucket (exact, in integers over the common
    denominator, as :func:`bill`)."""
    p_in, p_out, p_read, p_w5m, p_w1h, den = prices._scaled
    exact = prompt_tokens * max(p_in, p_read, p_w5m, p_w1h) + output_tokens * p_out
    return -(-exact // den)


def least_micros(prices: Prices, prompt_tokens: int) -> int:
    """The least a prompt of ``prompt_tokens`` can cost (every token in the cheapest bucket)."""
    p_in, _, p_read, p_w5m, p_w1h, den = prices._scaled
    return -(-prompt_tokens * min(p_in, p_read, p_w5m, p_w1h) // den)


def micros_to_usd(micros: int) -> float:
    """For display only; money is never summed as floats."""
    return micros / MICROS_PER_USD


__all__ = [
    "MICROS_PER_USD",
    "NO_BILL",
    "Bill",
    "Prices",
    "bill",
    "least_micros",
    "micros_to_usd",
    "per_mtok",
    "worst_case_micros",
]
