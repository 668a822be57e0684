"""How many distinct features (``x-trioproxy-feature``) a team's requests may name per hour.

A feature is a dimension of the ledger's roll-ups (``ledger_hourly``, ``ledger_daily``),
which retention never trims: a caller naming a new feature per request (a request id, a
timestamp) would add a roll-up row per request, for ever, and make spend by feature a scan.
Past :data:`FEATURES_PER_HOUR` distinct names in a team's hour, a request's spend is
attributed to :data:`OTHER` (still counted, never lost). Pure; the hour comes from ``now``.
Per worker process (one for every endpoint, kept across reloads): with N workers a team may
name up to N times as many in an hour.
"""

from __future__ import annotations

FEATURES_PER_HOUR = 100
OTHER = "other"


class FeatureCap:
    def __init__(self, per_hour: int = FEATURES_PER_HOUR) -> None:
        self.per_hour = per_hour
        self._hour = -1
        self._seen: dict[str, set[str]] = {}
        self.capped = 0
        """Requests attributed to :data:`OTHER` so far."""

    def name(self, team: str, feature: str, now: float) -> str:
        """``feature``, or :data:`OTHER` when the team's hour already named enough others."""
        hour = int(now // 3600)
        if hour != self._hour:
            self._hour, self._seen = hour, {}
        seen = self._seen.setdefault(team, set())
        if feature in seen:
            return feature
        if len(seen) < self.per_hour:
            seen.add(feature)
            return feature
        self.capped += 1
        return OTHER


__all__ = ["FEATURES_PER_HOUR", "OTHER", "FeatureCap"]
