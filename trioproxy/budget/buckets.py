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


__all__ = ["end_user_window", "key_rpm", "key_tpm", "team_period", "user_window"]
