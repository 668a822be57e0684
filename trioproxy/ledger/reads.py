"""The dashboard's reads of the roll-ups and the request log, written once for both backends.

:class:`RollupReads` is mixed into :class:`~trioproxy.ledger.sqlite.SqliteLedger` and
:class:`~trioproxy.ledger.postgres.PostgresLedger`; each supplies only how a function runs on
one of its connections in a worker thread (``_read``), its placeholder and how a timestamp is
passed and read (SQLite stores seconds, PostgreSQL a ``timestamptz``). The SQL itself lives
beside its table (:mod:`.hourly`, :mod:`.days`, :mod:`.minutes`, :mod:`.recent`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from trioproxy.ledger import days, hourly, minutes, recent
from trioproxy.ledger.columns import from_row
from trioproxy.ledger.record import UsageRecord

T = TypeVar("T")

DayCells = tuple[int, str, int, int, int, int, int]
"""(local day number, value, requests, input tokens, output tokens, cost µUSD, saved µUSD):
one line of the Spend CSV, as the database sums it (no row objects: 15,000 of them cost more
than the query)."""


class RollupReads:
    PARAM: ClassVar[str]
    """The driver's placeholder (``?`` or ``%s``)."""
    TS_PARAM: ClassVar[str]
    """A timestamp parameter (seconds) as the raw table's ``ts`` compares with it."""
    TS_SELECT: ClassVar[str]
    """The raw table's ``ts`` read back as seconds."""
    days_zone: str

    async def _read(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in a worker thread (the backend's own limiter)."""
        raise NotImplementedError

    async def _days_zone_known(self) -> None:
        """Before comparing with :attr:`days_zone`: learn it if it is not known yet."""

    async def query_hours(
        self,
        *,
        by: Sequence[str],
        first_hour: int,
        end_hour: int,
        teams: Sequence[str] | None = None,
    ) -> list[hourly.HourRow]:
        if teams is not None and not teams:
            return []
        sql = hourly.query_sql(by, self.PARAM, teams=len(teams) if teams is not None else 0)
        params = (first_hour, end_hour, *(teams or ()))
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return hourly.rows_of(rows, len(by))

    async def _day_sums(
        self, dim: str, first: dt.date, last: dt.date, zone: str,
        teams: Sequence[str] | None, keep: Sequence[str], values: Sequence[str] | None,
    ) -> tuple[list[Any], list[days.DayRow] | None]:  # fmt: skip
        """The table's rows as the database returns them (``keep``'s four columns, then the
        sums of the metrics); or, for another zone than the table's, none and
        :class:`~trioproxy.ledger.days.DayRow` values folded from the hourly roll-up."""
        days.check_query(dim, keep)
        if (teams is not None and not teams) or (values is not None and not values):
            return [], None
        await self._days_zone_known()
        if zone != self.days_zone:
            lo, hi = days.hours_of(first, last, zone)
            rows = await self.query_hours(by=days.hourly_by(dim), first_hour=lo,
                                          end_hour=hi, teams=teams)  # fmt: skip
            return [], days.from_hours(rows, dim, zone, first, last, keep, values)
        sql = days.query_sql(self.PARAM, teams=len(teams or ()), values=len(values or ()),
                             keep=keep, first=days.day_number(first))  # fmt: skip
        params = days.query_params(dim, first, last, teams, values)
        result: list[Any] = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return result, None

    async def query_days(
        self,
        *,
        dim: str,
        first: dt.date,
        last: dt.date,
        zone: str,
        teams: Sequence[str] | None = None,
        keep: Sequence[str] = days.KEEP,
        values: Sequence[str] | None = None,
    ) -> list[days.DayRow]:
        raw, folded = await self._day_sums(dim, first, last, zone, teams, keep, values)
        return folded if folded is not None else days.rows_of(raw)

    async def day_cells(
        self,
        *,
        dim: str,
        first: dt.date,
        last: dt.date,
        zone: str,
        teams: Sequence[str] | None = None,
    ) -> list[DayCells]:
        """Per local day and value of ``dim``: :data:`DayCells`, ordered by day and value
        (code points: the database's order is re-checked, a sort of a sorted list is one pass,
        as PostgreSQL may collate text otherwise)."""
        days.check_dimension(dim)
        if teams is not None and not teams:
            return []
        await self._days_zone_known()
        cells: list[DayCells]
        if zone != self.days_zone:
            folded = await self.query_days(dim=dim, first=first, last=last, zone=zone,
                                           teams=teams, keep=("day", "value"))  # fmt: skip
            cells = [(days.day_number(r.day), r.value, r.requests, r.input_tokens,
                      r.output_tokens, r.cost_micros, r.saved_micros) for r in folded]  # fmt: skip
        else:
            sql = days.cells_sql(self.PARAM, teams=len(teams or ()))
            params = days.query_params(dim, first, last, teams, None)
            cells = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        cells.sort()
        return cells

    async def query_minutes(
        self, *, first_minute: int, end_minute: int, teams: Sequence[str] | None = None
    ) -> list[minutes.MinuteRow]:
        if teams is not None and not teams:
            return []
        sql = minutes.query_sql(self.PARAM, teams=len(teams or ()))
        params = (first_minute, end_minute, *(teams or ()))
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return minutes.rows_of(rows)

    async def recent_requests(
        self,
        filters: recent.Filters,
        *,
        cursor: recent.Cursor | None,
        limit: int,
        since: float,
        until: float,
    ) -> tuple[list[UsageRecord], list[recent.Attempt]]:
        sql, params = recent.page_sql(
            filters, cursor=cursor, limit=limit, since=since, until=until, param=self.PARAM,
            ts_param=self.TS_PARAM, ts_select=self.TS_SELECT,
        )  # fmt: skip
        q_param, q_ts = self.PARAM, self.TS_PARAM

        def page(conn: Any) -> tuple[list[UsageRecord], list[Any]]:
            records = [from_row(r) for r in conn.execute(sql, params).fetchall()]
            if not records:
                return records, []
            lo = min(r.ts for r in records)
            hi = max(r.ts for r in records) + recent.ATTEMPT_SPAN_S
            ids = [r.request_id for r in records]
            q = recent.attempts_sql(len(ids), param=q_param, ts_param=q_ts)
            return records, conn.execute(q, (lo, hi, *ids)).fetchall()

        records, found = await self._read(page)
        return records, recent.attempts_of(found)

    async def oldest_request_ts(self) -> float | None:
        sql = recent.oldest_sql(self.TS_SELECT)
        row = await self._read(lambda conn: conn.execute(sql).fetchone())
        return None if row is None else float(row[0])


__all__ = ["DayCells", "RollupReads"]
