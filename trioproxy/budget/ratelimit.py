"""What a caller may still do: the numbers behind the rate-limit response headers.

After admission, from the key's RPM window and the tightest token budget that applied (the
key's TPM, the user's or the end user's token window: whichever has the least room left);
after a refusal, from the denial itself. Windows slide over exact logs and the request just
admitted is the newest entry, so a window is back to its initial state ``window_s`` after now.
"""

from __future__ import annotations

from typing import Any

from trioproxy.budget.ticket import Ticket
from trioproxy.core.ratelimit import NO_LIMITS, Limit, RateLimits
from trioproxy.errors import ErrorKind, GatewayError

TOKEN_FAMILIES = frozenset({"tpm", "user", "enduser"})


def after_admission(ticket: Ticket) -> RateLimits:
    """The request and token limits of an admitted request, from the usage the store's
    admitting operation read (``Ticket.window_usage``: no further store call). Nothing for
    a fail-open local reservation, or a bucket the store gave no number for: no number is
    better than a wrong one."""
    if ticket.local:
        return NO_LIMITS
    requests: Limit | None = None
    tokens: Limit | None = None
    for h in ticket.holds:
        c = h.claim
        if c.window_s is None or h.family not in TOKEN_FAMILIES | {"rpm"}:
            continue
        used = ticket.window_usage.get(c.bucket)
        if used is None:
            continue
        limit = Limit(c.limit, max(0, c.limit - used), c.window_s)
        if h.family == "rpm":
            requests = limit
        elif tokens is None or limit.remaining < tokens.remaining:
            tokens = limit
    return RateLimits(requests, tokens)


def of_refusal(err: GatewayError) -> RateLimits:
    """The limit a refusal hit, from the denial's details."""
    if err.kind is not ErrorKind.RATE_LIMITED:
        return NO_LIMITS
    d: dict[str, Any] = err.details
    reset = err.retry_after if err.retry_after is not None else 0.0
    if isinstance(d.get("requests"), int) and isinstance(d.get("limit"), int):
        return RateLimits(requests=Limit(d["limit"], max(0, d["limit"] - d["requests"]), reset))
    if isinstance(d.get("spent_tokens"), int) and isinstance(d.get("limit"), int):
        return RateLimits(tokens=Limit(d["limit"], max(0, d["limit"] - d["spent_tokens"]), reset))
    return NO_LIMITS


__all__ = ["after_admission", "of_refusal"]
