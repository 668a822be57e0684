"""Per-bucket model prices: the providers' default rules and the resolved :class:`Prices`.

Defaults, applied at load to any bucket price the config leaves out:

* ``anthropic``: cache read 0.1x the input price, 5-minute cache write 1.25x,
  1-hour cache write 2x (Anthropic's published multipliers).
* ``openai``: cache writes cost the input price (OpenAI charges nothing extra);
  cached input is discounted per model family (:data:`OPENAI_CACHED_INPUT`,
  longest matching prefix of the deployment name; 0.5x otherwise).
* ``openai_compatible``: no discount and no premium (every bucket at the input
  price) since the server's rules are unknown; set the prices in the config.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction

from trioproxy.config.model import ModelConfig
from trioproxy.core.billing import Prices, per_mtok

ANTHROPIC_CACHE_READ = Fraction(1, 10)
ANTHROPIC_CACHE_WRITE_5M = Fraction(5, 4)
ANTHROPIC_CACHE_WRITE_1H = Fraction(2)

OPENAI_CACHED_INPUT: dict[str, Fraction] = {
    "gpt-5": Fraction(1, 10),
    "gpt-4.1": Fraction(1, 4),
    "gpt-4o": Fraction(1, 2),
    "o4-mini": Fraction(1, 4),
    "o3-mini": Fraction(1, 2),
    "o3": Fraction(1, 4),
    "o1": Fraction(1, 2),
}
"""Cached-input price as a fraction of the input price, by deployment-name prefix
(OpenAI's list prices)."""
OPENAI_CACHED_INPUT_OTHER = Fraction(1, 2)


def _openai_cached(deployment: str) -> Fraction:
    matches = [p for p in OPENAI_CACHED_INPUT if deployment.startswith(p)]
    return OPENAI_CACHED_INPUT[max(matches, key=len)] if matches else OPENAI_CACHED_INPUT_OTHER


def _usd(price: Fraction) -> float:
    return float(price)  # multipliers of a decimal price stay short decimals (repr round-trips)


def with_default_prices(model: ModelConfig, kind: str) -> ModelConfig:
    """``model`` with every bucket price the config left out set by ``kind``'s rules."""
    base = per_mtok(model.input_per_mtok)
    if kind == "anthropic":
        read, w5m, w1h = ANTHROPIC_CACHE_READ, ANTHROPIC_CACHE_WRITE_5M, ANTHROPIC_CACHE_WRITE_1H
    elif kind == "openai":
        read, w5m, w1h = _openai_cached(model.deployment), Fraction(1), Fraction(1)
    else:
        read = w5m = w1h = Fraction(1)

    def pick(given: float | None, factor: Fraction) -> float:
        return given if given is not None else _usd(base * factor)

    return dataclasses.replace(
        model,
        cache_read_per_mtok=pick(model.cache_read_per_mtok, read),
        cache_write_5m_per_mtok=pick(model.cache_write_5m_per_mtok, w5m),
        cache_write_1h_per_mtok=pick(model.cache_write_1h_per_mtok, w1h),
    )


def prices_of(model: ModelConfig) -> Prices:
    """The model's exact per-bucket prices (a bucket left unset costs the input price): the
    ones :mod:`.resolve` attached at load, else (a hand-built model) computed here."""
    prices = model.resolved_prices
    return prices if prices is not None else _prices(model)


@functools.lru_cache(maxsize=1024)
def _prices(model: ModelConfig) -> Prices:
    base = per_mtok(model.input_per_mtok)

    def price(given: float | None) -> Fraction:
        return base if given is None else per_mtok(given)

    return Prices(
        input=base,
        output=per_mtok(model.output_per_mtok),
        cache_read=price(model.cache_read_per_mtok),
        cache_write_5m=price(model.cache_write_5m_per_mtok),
        cache_write_1h=price(model.cache_write_1h_per_mtok),
    )


__all__ = [
    "ANTHROPIC_CACHE_READ",
    "ANTHROPIC_CACHE_WRITE_1H",
    "ANTHROPIC_CACHE_WRITE_5M",
    "OPENAI_CACHED_INPUT",
    "prices_of",
    "with_default_prices",
]
