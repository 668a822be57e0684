"""The providers and the models they serve, as configured (``[providers.*]``, ``[models.*]``);
each model's provider is attached once at load (:mod:`.resolve`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trioproxy.config.secret import Secret
from trioproxy.core.billing import Prices
from trioproxy.providers.base import BetaPolicy


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    """One of ``providers.registry.KINDS``."""
    base_url: str
    api_key: Secret | None = None
    max_connections: int = 512
    """Connections to this provider at most, busy and idle together (the pool's bound)."""
    pool_idle_s: float = 30.0
    """An idle keep-alive connection is closed after this long unused."""
    ca_file: str | None = None
    """PEM file of the CAs to trust for this provider (replaces the default bundle)."""
    proxy: str = "env"
    """``env`` (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), ``none``, or an ``http://`` proxy URL."""
    anthropic_betas_allow: frozenset[str] | None = None
    """``anthropic-beta`` values a caller may pass through to this provider; None = any."""
    anthropic_betas_deny: frozenset[str] = frozenset()
    """``anthropic-beta`` values never passed through (checked after the allow list)."""
    image_tokens: int = 1_600
    """Input tokens one image may cost on this provider, for the budget's worst case
    (Anthropic and OpenAI gpt-4o stay under ~1,600; gpt-4o-mini bills images ~33x more)."""

    @property
    def betas(self) -> BetaPolicy:
        return BetaPolicy(self.anthropic_betas_allow, self.anthropic_betas_deny)


DEFAULT_MAX_OUTPUT_TOKENS = 4_096
"""A model's ``max_output_tokens`` when its config entry names none (``check-config`` warns:
every request to it is then capped there)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    provider: str
    deployment: str
    """The provider's own model name."""
    input_per_mtok: float
    """USD per 1M uncached input tokens."""
    output_per_mtok: float
    """USD per 1M output tokens (reasoning tokens included)."""
    context_limit: int = 128_000
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    """The most output tokens a request to this model gets: sent upstream as its cap
    (:func:`~trioproxy.core.tokens.answer_cap`), and what a budget reservation prices."""
    max_dimensions: int = 3_072
    """An embedding model's widest vector when the request names no ``dimensions``: it
    bounds how many bytes of its answer the gateway reads (edge/embeddings.py)."""
    embedding: bool = field(default=False, metadata={"derived": True})
    """An embedding model (its config entry has an input price and no output price):
    served on ``/v1/embeddings`` only, and never on the chat endpoints."""
    cache_read_per_mtok: float | None = None
    """USD per 1M prompt-cache read tokens. The loader fills the provider's default
    (:mod:`trioproxy.config.pricing`); None (a hand-built config) = the input price."""
    cache_write_5m_per_mtok: float | None = None
    """USD per 1M tokens written to a 5-minute prompt cache; None = the input price."""
    cache_write_1h_per_mtok: float | None = None
    """USD per 1M tokens written to a 1-hour prompt cache; None = the input price."""
    resolved_provider: ProviderConfig | None = field(
        default=None, compare=False, repr=False, metadata={"derived": True}
    )
    """The provider named by ``provider``, attached once at config load (:mod:`.resolve`)."""
    resolved_prices: Prices | None = field(
        default=None, init=False, compare=False, repr=False, metadata={"derived": True}
    )
    """The exact per-bucket prices of the fields above, attached once at config load
    (:mod:`.resolve`): :func:`~trioproxy.config.pricing.prices_of` reads them, no look-up
    (a hash of every field above) per bill. Not an ``__init__`` argument: a
    ``dataclasses.replace`` copy starts without them (they never outlive their fields)."""

    @property
    def endpoint(self) -> ProviderConfig:
        """This model's provider (base URL, key, kind): no look-up by name on the request path."""
        if self.resolved_provider is None:
            raise LookupError(f"model {self.name!r}: provider {self.provider!r} not resolved")
        return self.resolved_provider


__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "ModelConfig", "ProviderConfig"]
