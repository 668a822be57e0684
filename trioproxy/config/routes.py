"""Routes as configured (``[routes.*]``): chains of targets with their timeouts and
hedging, the rules that pick a chain, the fallback statuses and the route's cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from trioproxy.config.catalog import ModelConfig
from trioproxy.core.types import Priority

DEFAULT_FALLBACK_STATUSES: frozenset[int] = frozenset({408, 409, 429, 529, *range(500, 600)})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Each one is a named ``trio.fail_after`` scope in the upstream call."""

    connect: float = field(default=5.0, metadata={"toml": "connect_timeout_s"})
    first_byte: float = field(default=30.0, metadata={"toml": "first_byte_timeout_s"})
    idle: float = field(default=30.0, metadata={"toml": "idle_timeout_s"})
    """Longest silence between two stream chunks."""
    total: float = field(default=600.0, metadata={"toml": "total_timeout_s"})


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    timeouts: Timeouts = Timeouts()
    hedge_after_ms: int | None = None
    """Start the next target if this one has no first byte after this long."""
    resolved: ModelConfig | None = field(
        default=None, compare=False, repr=False, metadata={"derived": True}
    )
    """The model named by ``model``, attached once at config load (:mod:`.resolve`)."""

    @property
    def spec(self) -> ModelConfig:
        """This target's model (prices, limits) and, through it, its provider."""
        if self.resolved is None:
            raise LookupError(f"target {self.model!r} not resolved")
        return self.resolved


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class SelectRule:
    """Pick ``chain`` when every given condition holds (None = any)."""

    chain: str
    priority: frozenset[Priority] | None = None
    max_prompt_tokens: int | None = None
    min_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    """Requested ``max_tokens`` must be at most this (missing counts as the model cap)."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    exact_ttl_s: int = 0
    """0 = exact cache off for this route."""
    semantic_ttl_s: int = 0
    """0 = semantic cache off for this route."""
    semantic_target_false_hit: float = 0.01
    """What share of semantic hits may be wrong answers (measured on held-out near-misses);
    picks the cosine band and the verifier's cut (``trioproxy.cache.band.BAND_PRESETS``)."""
    semantic_band: tuple[float, float] | None = None
    """Explicit cosine [floor, ceiling] instead of the target's: below the floor a miss,
    from the ceiling up a hit without the pair verifier (the guard still applies)."""
    semantic_threshold: float | None = None
    """Older spelling of the band's floor (a raw cosine); None = from the target."""
    confirm_users: int = 1
    """Poisoning resistance: a semantic entry is served to other keys of its scope only once
    this many distinct keys (its writer included) asked the same thing, and exact entries
    are kept per key. 1 = off."""
    scope: Literal["team", "global"] = "team"
    max_temperature: float = 0.3
    allow_tools: bool = False


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    chains: Mapping[str, Chain]
    """Always holds ``default``."""
    rules: tuple[SelectRule, ...] = ()
    fallback_statuses: frozenset[int] = DEFAULT_FALLBACK_STATUSES
    reservation_cap_usd: float | None = None
    """The most a stream reserves up front (it grows as the stream runs); a whole answer
    reserves its worst case."""
    cache: CacheConfig = CacheConfig()


__all__ = [
    "DEFAULT_FALLBACK_STATUSES",
    "CacheConfig",
    "Chain",
    "RouteConfig",
    "SelectRule",
    "Target",
    "Timeouts",
]
