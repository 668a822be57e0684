"""Rate-limit response headers in each dialect's own names (pure).

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets as durations
(``1m0s``, ``6s``, ``250ms``). Anthropic: ``anthropic-ratelimit-{requests,tokens}-{limit,
remaining,reset}`` with resets as RFC 3339 times. The official SDKs read both.
"""

from __future__ import annotations

import datetime as dt
import math

from trioproxy.core.ratelimit import Limit, RateLimits
from trioproxy.core.types import Dialect

Header = tuple[bytes, bytes]


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``1m0s``, ``6s``, ``1.5s``, ``250ms`` (never early)."""
    if seconds < 1:
        return f"{math.ceil(max(0.0, seconds) * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    return (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60}s"


def rfc3339(wall: float) -> str:
    when = dt.datetime.fromtimestamp(math.ceil(wall), dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _openai(kind: str, lim: Limit) -> list[Header]:
    return [
        (f"x-ratelimit-limit-{kind}".encode(), str(lim.limit).encode()),
        (f"x-ratelimit-remaining-{kind}".encode(), str(lim.remaining).encode()),
        (f"x-ratelimit-reset-{kind}".encode(), duration(lim.reset_s).encode()),
    ]


def _anthropic(kind: str, lim: Limit, now: float) -> list[Header]:
    return [
        (f"anthropic-ratelimit-{kind}-limit".encode(), str(lim.limit).encode()),
        (f"anthropic-ratelimit-{kind}-remaining".encode(), str(lim.remaining).encode()),
        (f"anthropic-ratelimit-{kind}-reset".encode(), rfc3339(now + lim.reset_s).encode()),
    ]


def rate_limit_headers(dialect: Dialect, limits: RateLimits, *, now: float) -> list[Header]:
    """Headers for ``limits`` in ``dialect``; ``now`` is wall-clock time (Anthropic resets)."""
    out: list[Header] = []
    for kind, lim in (("requests", limits.requests), ("tokens", limits.tokens)):
        if lim is None:
            continue
        out += _openai(kind, lim) if dialect == "openai" else _anthropic(kind, lim, now)
    return out


__all__ = ["duration", "rate_limit_headers", "rfc3339"]
