"""The usage record: one per request and one per upstream attempt.

The gateway builds these; a :class:`UsageSink` takes them. The ledger writer
is the durable sink; tests and the demo may use a logging sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

RecordKind = Literal["request", "attempt"]
CacheStatus = Literal["off", "miss", "exact", "semantic", "bypass"]
HedgeRole = Literal["primary", "fallback", "hedge"]
Outcome = Literal["served", "won", "lost", "failed", "cancelled", "denied", "error", "interrupted"]
"""``interrupted``: the drain deadline ended the request (billed for what it received), or the
gateway process died during it (recovered from the journal)."""


@dataclass(frozen=True, slots=True)
class UsageRecord:
    ts: float
    """Unix time the request (or attempt) started."""
    request_id: str
    kind: RecordKind
    key_name: str
    team: str
    user: str
    feature: str
    route: str
    endpoint: str = ""
    """The caller's endpoint (:mod:`trioproxy.core.endpoints`: ``/v1/chat/completions``,
    ``/v1/messages``, ``/v1/responses``, ``/v1/embeddings``, ``/v1/messages/count_tokens``);
    ``''`` on records made before the ledger kept it."""
    end_user: str | None = None
    chain: str | None = None
    target: str | None = None
    """Model config name of the target that served (request) or was tried (attempt)."""
    provider: str | None = None
    provider_model: str | None = None
    input_tokens: int = 0
    """Uncached input tokens; the buckets below are disjoint from it (:class:`Usage`)."""
    output_tokens: int = 0
    """Reasoning tokens included."""
    estimated: bool = False
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    """Part of ``output_tokens``."""
    cost_micros: int = 0
    """What was billed (µUSD, :func:`trioproxy.core.billing.bill`)."""
    saved_micros: int = 0
    """What a gateway cache hit saved (the cached answer's bill)."""
    cache_saved_micros: int = 0
    """What the provider's prompt cache saved against full input price (may be negative)."""
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    cache: CacheStatus = "off"
    status: int = 200
    error_kind: str | None = None
    fallback_depth: int = 0
    """0 for the first target of the chain, 1 for the next, ..."""
    attempt: int = 0
    """Index of this attempt within its request (0, 1, ...; 0 for the request record).
    Together with ``request_id``, ``kind`` and ``target`` it is the ledger's idempotency key."""
    hedge_role: HedgeRole | None = None
    outcome: Outcome = "served"
    stream: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UsageSink(Protocol):
    def submit(self, record: UsageRecord) -> None:
        """Hand over a record without blocking; must never raise into the request."""
        ...

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        """Hand over one request's final records at once (its attempts, then its request
        record): as :meth:`submit` for each, in order; a durable sink journals them in one
        write."""
        ...

    def intend(self, record: UsageRecord) -> int:
        """Note the provisional record of an upstream call about to be made: a durable sink
        journals it, and it stands if the process dies before the request's records are
        submitted. Returns the token to :meth:`resolve` once they are. Never blocks or raises."""
        ...

    def resolve(self, token: int) -> None:
        """The request's records were submitted: the provisional record ``token`` is void."""
        ...


__all__ = ["CacheStatus", "HedgeRole", "Outcome", "RecordKind", "UsageRecord", "UsageSink"]
