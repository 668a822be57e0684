"""The ledger as a budget rebuild reads it (:class:`trioproxy.budget.recovery.SpendSource`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from trioproxy.budget.rebuild import HourSpend, RequestSpend
from trioproxy.core.types import total_tokens
from trioproxy.ledger.backend import LedgerBackend


class LedgerSpend:
    """Request spend: the hourly roll-up per team or per user, and raw records by time."""

    def __init__(self, backend: LedgerBackend) -> None:
        self._backend = backend

    async def hours(
        self, first_hour: int, end_hour: int, *, by: Literal["team", "user"]
    ) -> list[HourSpend]:
        if end_hour <= first_hour:
            return []
        rows = await self._backend.query_hours(by=[by], first_hour=first_hour, end_hour=end_hour)
        return [HourSpend(r.hour, r.group[0], r.cost_micros, total_tokens(r)) for r in rows]

    async def requests(self, ranges: Sequence[tuple[float, float]]) -> list[RequestSpend]:
        out: list[RequestSpend] = []
        for lo, hi in ranges:
            rows = await self._backend.request_spend(since=lo, until=hi)
            out += [RequestSpend(*row) for row in rows]
        return out


__all__ = ["LedgerSpend"]
