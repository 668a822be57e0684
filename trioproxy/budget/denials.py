"""A refused reservation as the caller reads it: which budget, how full, when to retry."""

from __future__ import annotations

from collections.abc import Sequence

from trioproxy.budget.claims import Denial
from trioproxy.budget.periods import retry_after_header
from trioproxy.budget.ticket import Hold
from trioproxy.errors import ErrorKind, PolicyError


def denied(team: str, holds: Sequence[Hold], d: Denial, *, growing: bool = False) -> PolicyError:
    """``growing``: the denial of a capped stream's next reservation step (the stream ends),
    not of a request's admission."""
    family = next(h.family for h in holds if h.claim.bucket == d.bucket)
    retry = None if d.retry_after is None else retry_after_header(d.retry_after)
    if family in ("day", "month"):
        word = "daily" if family == "day" else "monthly"
        if d.used >= d.limit:
            why = (f"team {team!r} {word} budget exhausted: ${d.used / 1e6:.6f} of "
                   f"${d.limit / 1e6:.6f} spent or reserved")  # fmt: skip
        else:  # money left, but less than this request's worst case (reserved up front)
            why = (f"team {team!r} {word} budget has ${(d.limit - d.used) / 1e6:.6f} of "
                   f"${d.limit / 1e6:.6f} left (the rest spent or reserved), less than "
                   + (f"this stream's next reservation step (${d.amount / 1e6:.6f}): the "
                      f"stream ends here" if growing else
                      f"this request may cost: up to ${d.amount / 1e6:.6f} for its prompt and "
                      f"its output cap, reserved until it ends"))  # fmt: skip
        return PolicyError(
            ErrorKind.BUDGET_EXCEEDED,
            why,
            retry_after=retry,
            details={"budget": d.bucket, "spent_usd": d.used / 1e6, "limit": d.limit / 1e6},
        )
    if family == "rpm":
        return PolicyError(
            ErrorKind.RATE_LIMITED,
            f"request rate limit: {d.used} of {d.limit} requests in the last minute",
            retry_after=retry,
            details={"budget": d.bucket, "requests": d.used, "limit": d.limit},
        )
    if d.used >= d.limit:
        why = f"token window {d.bucket!r} full: {d.used} of {d.limit} tokens used"
    else:
        why = (f"token window {d.bucket!r} has {d.limit - d.used} of {d.limit} tokens left, "
               + (f"less than this stream's next reservation step ({d.amount} tokens): the "
                  f"stream ends here" if growing else
                  f"less than this request may use: up to {d.amount} for its prompt and its "
                  f"output cap, reserved until it ends"))  # fmt: skip
    return PolicyError(
        ErrorKind.RATE_LIMITED,
        why,
        retry_after=retry,
        details={"budget": d.bucket, "spent_tokens": d.used, "limit": d.limit},
    )


__all__ = ["denied"]
