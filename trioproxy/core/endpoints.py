"""The gateway's proxy endpoints, by the path a caller names them with (aliases aside).

One fact in one place: the edge dispatches on these paths, every usage record of a request
carries the one it came through (``UsageRecord.endpoint``: the ledger, the Requests page,
its CSV, the access line), so a ``count_tokens`` call or an embedding is never mistaken
for a generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from trioproxy.core.types import Dialect

CHAT_COMPLETIONS = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"
COUNT_TOKENS = "/v1/messages/count_tokens"

GENERATION: Mapping[Dialect, str] = MappingProxyType(
    {"openai": CHAT_COMPLETIONS, "anthropic": MESSAGES, "responses": RESPONSES}
)
"""The endpoint that generates in each caller dialect."""

ALL: tuple[str, ...] = (CHAT_COMPLETIONS, MESSAGES, RESPONSES, EMBEDDINGS, COUNT_TOKENS)
"""Every endpoint a usage record may name (the Requests page's filter offers these)."""

__all__ = ["ALL", "CHAT_COMPLETIONS", "COUNT_TOKENS", "EMBEDDINGS", "GENERATION", "MESSAGES",
           "RESPONSES"]  # fmt: skip
