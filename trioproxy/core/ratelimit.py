"""The numbers behind rate-limit response headers (values; the dialects render them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    limit: int
    remaining: int
    reset_s: float
    """Seconds until the limit is back to its initial state (refused: until the request fits)."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    requests: Limit | None = None
    tokens: Limit | None = None


NO_LIMITS = RateLimits()

__all__ = ["NO_LIMITS", "Limit", "RateLimits"]
