"""The names of budget buckets: the keys a store counts under (Redis: ``P c:<bucket>``,
``P w:<bucket>``). The gate claims them, a rebuild writes them, the dashboard reads them;
all three spell them here. Pure."""

from __future__ import annotations


def team_period(team: str, kind: str, period: str) -> str:
    """A team's spend in one day or month (``kind``), named by the period (``periods.py``)."""
    return f"team:{team}:{kind}:{period}"


def user_window(user: str) -> str:
    """A user's token window."""
    return f"user:{user}"


def end_user_window(team: str, end_user: str) -> str:
    """An end user's token window (per team: end-user ids are the caller's)."""
    return f"enduser:{team}:{end_user}"


def key_rpm(key: str) -> str:
    """An API key's requests in the last minute."""
    return f"key:{key}:rpm"


def key_tpm(key: str) -> str:
    """An API key's tokens in the last minute."""
    return f"key:{key}:tpm"


def family_of(bucket: str) -> str | None:
    """Which of the gate's claim families (``ticket.FAMILIES``) the bucket ``bucket`` counts
    for, read off its name as the functions above spell it; None for another name."""
    if bucket.startswith("team:"):
        kind = bucket.rsplit(":", 2)[-2] if bucket.count(":") >= 3 else ""
        return kind if kind in ("day", "month") else None
    if bucket.startswith("user:"):
        return "user"
    if bucket.startswith("enduser:"):
        return "enduser"
    if bucket.startswith("key:"):
        for family in ("rpm", "tpm"):
            if bucket.endswith(":" + family):
                return family
    return None


__all__ = ["end_user_window", "family_of", "key_rpm", "key_tpm", "team_period", "user_window"]
