"""What a cache stores: the canonical completion, dialect-free, as compact orjson.

A hit is rendered by the gateway in the caller's dialect, either as a body or replayed as a
stream, from :meth:`CacheEntry.completion`. Only complete answers are storable: see
:func:`storable`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from trioproxy.core.types import Completion, FinishReason, ToolCall, Usage

_VERSION = 2
"""2: usage buckets and the cost in integer µUSD (1: prompt/output and a float USD cost)."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    """The model that served the original answer."""
    cost_micros: int
    """What the original answer cost (its bill, µUSD); a hit records this as saved."""
    created_at: float
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def from_completion(cls, c: Completion, *, cost_micros: int, now: float) -> CacheEntry:
        return cls(c.text, c.finish_reason, c.usage, c.model, cost_micros, now, c.tool_calls)

    def completion(self, response_id: str) -> Completion:
        return Completion(
            id=response_id,
            model=self.model,
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=self.tool_calls,
        )

    def to_bytes(self) -> bytes:
        u = self.usage
        return orjson.dumps(
            [
                _VERSION,
                self.text,
                self.finish_reason,
                [
                    u.input_tokens,
                    u.output_tokens,
                    u.estimated,
                    u.cache_read_tokens,
                    u.cache_write_5m_tokens,
                    u.cache_write_1h_tokens,
                    u.reasoning_tokens,
                ],
                self.model,
                self.cost_micros,
                self.created_at,
                [[t.id, t.name, t.arguments] for t in self.tool_calls],
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> CacheEntry:
        """Raises ValueError on anything but a version-1 or version-2 entry."""
        try:
            v, text, finish, usage, model, cost, created, calls = orjson.loads(raw)
            if v not in (1, _VERSION):
                raise ValueError(f"cache entry version {v!r}")
            buckets = [int(n) for n in usage[3:7]] if v == _VERSION else [0, 0, 0, 0]
            return cls(
                text=text,
                finish_reason=finish,
                usage=Usage(int(usage[0]), int(usage[1]), bool(usage[2]), *buckets),
                model=model,
                cost_micros=int(cost) if v == _VERSION else round(float(cost) * 1_000_000),
                created_at=float(created),
                tool_calls=tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in calls),
            )
        except (TypeError, IndexError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"bad cache entry: {exc}") from exc


def storable(c: Completion) -> bool:
    """Only whole answers are cached: never truncated (``length``), filtered or estimated."""
    return c.finish_reason in ("stop", "tool_calls") and not c.usage.estimated


__all__ = ["CacheEntry", "storable"]
