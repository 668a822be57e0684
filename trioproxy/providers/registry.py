"""Provider kind -> adapter: the one list of provider kinds.

Adding a kind is one adapter module, one entry here, and its wire module in the simulator;
config validation (``config/sections.py``) reads the kinds from :data:`KINDS`.

A kind may also speak a caller's dialect natively (``Kind.native``): then that caller's
requests go out in it instead of being translated to the provider's chat wire (OpenAI's
Responses API on ``openai`` providers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from trioproxy.core.types import Dialect
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.base import ProviderAdapter
from trioproxy.providers.openai import OpenAIAdapter
from trioproxy.providers.openai_responses import OpenAIResponsesAdapter

ProviderKind = str
"""One of :data:`KINDS`."""


@dataclass(frozen=True, slots=True)
class Kind:
    adapter: ProviderAdapter
    needs_key: bool = True
    """A provider of this kind must name an API key (``api_key_env``)."""
    native: Mapping[Dialect, ProviderAdapter] = field(default_factory=dict)
    """Caller dialects this kind serves in their own format (no translation)."""
    embeddings: bool = False
    """Serves ``/v1/embeddings`` (``providers/openai_embeddings.py``)."""
    semconv: str | None = None
    """Its OpenTelemetry ``gen_ai.provider.name``; None: the provider's own name."""


_KINDS: Mapping[ProviderKind, Kind] = MappingProxyType(
    {
        "openai": Kind(
            OpenAIAdapter(cap_field="max_completion_tokens"),
            native={"responses": OpenAIResponsesAdapter()},
            embeddings=True,
            semconv="openai",
        ),
        "openai_compatible": Kind(OpenAIAdapter(), needs_key=False, embeddings=True),
        "anthropic": Kind(AnthropicAdapter(), semconv="anthropic"),
    }
)
KINDS: tuple[ProviderKind, ...] = tuple(_KINDS)


def adapter_for(kind: ProviderKind, caller: Dialect | None = None) -> ProviderAdapter:
    """The (stateless, shared) adapter for a provider kind and the caller's dialect;
    ``KeyError`` if the kind is unknown."""
    entry = _KINDS[kind]
    if caller is not None and (native := entry.native.get(caller)) is not None:
        return native
    return entry.adapter


def needs_key(kind: ProviderKind) -> bool:
    return _KINDS[kind].needs_key


def serves_embeddings(kind: ProviderKind) -> bool:
    entry = _KINDS.get(kind)
    return entry is not None and entry.embeddings


def semconv_name(kind: ProviderKind, name: str) -> str:
    """``gen_ai.provider.name`` of a provider: its kind's, else its own ``name``."""
    entry = _KINDS.get(kind)
    return entry.semconv if entry is not None and entry.semconv is not None else name


__all__ = ["KINDS", "ProviderKind", "adapter_for", "needs_key", "semconv_name", "serves_embeddings"]
