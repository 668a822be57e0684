"""Provider kind -> adapter. Adding a provider is one module plus one line here.

A provider kind may also speak a caller's dialect natively (``_NATIVE``): then
that caller's requests go out in it instead of being translated to the
provider's chat wire (OpenAI's Responses API on ``openai`` providers).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from trioproxy.config.model import ProviderKind
from trioproxy.core.types import Dialect
from trioproxy.providers.anthropic import AnthropicAdapter
from trioproxy.providers.base import ProviderAdapter
from trioproxy.providers.openai import OpenAIAdapter
from trioproxy.providers.openai_responses import OpenAIResponsesAdapter

_ADAPTERS: Mapping[ProviderKind, ProviderAdapter] = MappingProxyType(
    {
        "openai": OpenAIAdapter(),
        "openai_compatible": OpenAIAdapter(),
        "anthropic": AnthropicAdapter(),
    }
)
_NATIVE: Mapping[tuple[ProviderKind, Dialect], ProviderAdapter] = MappingProxyType(
    {("openai", "responses"): OpenAIResponsesAdapter()}
)


def adapter_for(kind: ProviderKind, caller: Dialect | None = None) -> ProviderAdapter:
    """The (stateless, shared) adapter for a provider kind and the caller's dialect;
    ``KeyError`` if the kind is unknown."""
    if caller is not None and (native := _NATIVE.get((kind, caller))) is not None:
        return native
    return _ADAPTERS[kind]


__all__ = ["adapter_for"]
