"""Provider kind -> adapter. Adding a provider is one module plus one line here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from trioproxy.config.model import ProviderKind
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.base import ProviderAdapter
from trioproxy.providers.openai import OpenAIAdapter

_ADAPTERS: Mapping[ProviderKind, ProviderAdapter] = MappingProxyType(
    {
        "openai": OpenAIAdapter(),
        "openai_compatible": OpenAIAdapter(),
        "anthropic": AnthropicAdapter(),
    }
)


def adapter_for(kind: ProviderKind) -> ProviderAdapter:
    """The (stateless, shared) adapter for a provider kind; ``KeyError`` if unknown."""
    return _ADAPTERS[kind]


__all__ = ["adapter_for"]
