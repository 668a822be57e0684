"""Client dialects: what callers speak (OpenAI chat completions, Anthropic messages,
OpenAI responses)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from trioproxy.core.types import Dialect
from trioproxy.dialects.anthropic import AnthropicDialect
from trioproxy.dialects.base import ClientDialect, StreamEncoder
from trioproxy.dialects.openai import OpenAIDialect
from trioproxy.dialects.responses_render import ResponsesDialect
from trioproxy.errors import GatewayError

DIALECTS: Mapping[Dialect, ClientDialect] = MappingProxyType(
    {"openai": OpenAIDialect(), "anthropic": AnthropicDialect(), "responses": ResponsesDialect()}
)


def render_error(dialect: Dialect, err: GatewayError) -> bytes:
    """``err`` as a JSON body in the caller's dialect (status: ``err.status``)."""
    return DIALECTS[dialect].render_error(err)


__all__ = ["DIALECTS", "ClientDialect", "StreamEncoder", "render_error"]
