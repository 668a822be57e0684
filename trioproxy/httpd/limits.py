"""The data-plane server's limits and timeouts, and the body-rate rule (pure)."""

from __future__ import annotations

from dataclasses import dataclass

RECV_BYTES = 64 * 1024
"""Bytes asked of a client socket per read."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Every bound the server enforces on a client connection (seconds, bytes)."""

    header_timeout_s: float = 10.0
    """From a request's first byte (or a new connection's accept) to its complete head."""
    keep_alive_s: float = 20.0
    """Idle time allowed between requests on a keep-alive connection."""
    send_timeout_s: float = 60.0
    """Each write to the client must be taken within this; a client that stops reading is
    dropped (its request sees a disconnect: the upstream is cancelled, the slots freed)."""
    body_timeout_s: float = 60.0
    """Absolute deadline for a whole request body, from its head."""
    body_grace_s: float = 5.0
    """Time before ``body_min_rate`` applies (slow starts, small bodies)."""
    body_min_rate: int = 1024
    """Bytes per second a body must average after the grace period."""
    max_head_bytes: int = 32 * 1024
    """Request line plus headers; above it 431."""
    max_headers: int = 100
    max_body_bytes: int = 4 * 1024 * 1024
    """Above it 413 (the declared length is checked before any body byte is read)."""
    max_pipelined: int = 8
    """Complete requests a client may send ahead of their responses; then reading pauses."""
    recv_high_water: int = 64 * 1024
    """Unconsumed body bytes buffered per connection before reading pauses."""


def body_deadline(limits: HttpLimits, started: float, received: int) -> float:
    """When the next body byte must have arrived, given ``received`` bytes since ``started``.

    The body must keep an average of ``body_min_rate`` bytes/s after ``body_grace_s``,
    and finish within ``body_timeout_s`` whatever its rate.
    """
    by_rate = started + limits.body_grace_s + (received + 1) / limits.body_min_rate
    return min(by_rate, started + limits.body_timeout_s)


__all__ = ["RECV_BYTES", "HttpLimits", "body_deadline"]
