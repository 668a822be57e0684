"""Raw ledger columns shared by the SQLite and PostgreSQL backends.

A column list derived once from :class:`UsageRecord`, with each database's type, and the
conversions between a record and a row tuple. ``user`` is stored as ``user_name`` (``user`` is
reserved in PostgreSQL); ``target`` is stored as ``''`` when absent so that it can be part of the
unique key (NULLs never conflict).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

from trioproxy.ledger.record import UsageRecord

# field name -> (column name, SQLite type, PostgreSQL type)
_TYPES: dict[str, tuple[str, str]] = {
    "ts": ("REAL", "timestamptz"),
    **{
        f: ("INTEGER", "bigint")
        for f in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
            "cost_micros",
            "saved_micros",
            "cache_saved_micros",
        )
    },
    "status": ("INTEGER", "integer"),
    "fallback_depth": ("INTEGER", "integer"),
    "attempt": ("INTEGER", "integer"),
    "estimated": ("INTEGER", "boolean"),
    "stream": ("INTEGER", "boolean"),
    "latency_ms": ("REAL", "double precision"),
    "ttfb_ms": ("REAL", "double precision"),
}

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UsageRecord))
COLUMNS: tuple[str, ...] = tuple("user_name" if f == "user" else f for f in FIELDS)
KEY_COLUMNS: tuple[str, ...] = ("request_id", "kind", "attempt", "target")
NOT_NULL: frozenset[str] = frozenset(
    f.name
    for f in dataclasses.fields(UsageRecord)
    if f.default is dataclasses.MISSING or f.default is not None or f.name == "target"
)


def sqlite_type(field: str) -> str:
    return _TYPES.get(field, ("TEXT", "text"))[0]


def pg_type(field: str) -> str:
    return _TYPES.get(field, ("TEXT", "text"))[1]


def default_sql(field: str) -> str:
    """The value old rows get when a migration adds ``field``'s column."""
    typ = sqlite_type(field)
    return "0" if typ in ("INTEGER", "REAL") else "''"


METRICS: tuple[str, ...] = (
    "requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micros",
    "saved_micros",
    "cache_saved_micros",
)
"""The rollup's summed columns, in this order everywhere (``requests`` counts records, the
others are the :class:`UsageRecord` fields of the same name)."""


LEGACY_MONEY: dict[str, str] = {"cost_usd": "cost_micros", "saved_usd": "saved_micros"}
"""Float-USD columns of ledgers made before integer µUSD, and the columns that replace them."""


def upsert_tail(table: str, keys: str, metrics: tuple[str, ...] = METRICS) -> str:
    """The ``ON CONFLICT`` clause of a roll-up: add ``metrics`` to the stored row (both
    backends; ``keys`` is the roll-up's primary key)."""
    sets = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in metrics)
    return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"


def column_ddl(dialect: str) -> str:
    parts = []
    for field, col in zip(FIELDS, COLUMNS, strict=True):
        typ = sqlite_type(field) if dialect == "sqlite" else pg_type(field)
        null = " NOT NULL" if field in NOT_NULL else ""
        parts.append(f"{col} {typ}{null}")
    return ", ".join(parts)


_values = operator.attrgetter(*FIELDS)
_TARGET = FIELDS.index("target")


def to_row(record: UsageRecord) -> tuple[Any, ...]:
    """Values in :data:`COLUMNS` order (``target`` None -> ``''``)."""
    row: tuple[Any, ...] = _values(record)
    if row[_TARGET] is None:
        row = (*row[:_TARGET], "", *row[_TARGET + 1 :])
    return row


_BOOLS = frozenset(i for i, f in enumerate(FIELDS) if _TYPES.get(f, ("", ""))[1] == "boolean")


def from_row(row: Sequence[Any]) -> UsageRecord:
    """The record of a row in :data:`COLUMNS` order (``ts`` as Unix time; ``''`` target ->
    None; SQLite's 0/1 -> bool)."""
    values: list[Any] = [bool(v) if i in _BOOLS else v for i, v in enumerate(row)]
    if values[_TARGET] == "":
        values[_TARGET] = None
    return UsageRecord(*values)


def to_dict(record: UsageRecord) -> dict[str, Any]:
    """Field name -> value (a fast ``dataclasses.asdict`` for this flat record)."""
    return dict(zip(FIELDS, _values(record), strict=True))


class UsdViews:
    """The money columns of a roll-up row, in USD (pages and reports print them)."""

    __slots__ = ()
    cost_micros: int
    saved_micros: int
    cache_saved_micros: int

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000

    @property
    def saved_usd(self) -> float:
        return self.saved_micros / 1_000_000

    @property
    def cache_saved_usd(self) -> float:
        return self.cache_saved_micros / 1_000_000


def made_up(record: UsageRecord) -> bool:
    """A request row the journal's recovery made up for a request a dead process did not
    finish (:func:`~trioproxy.ledger.journal.resolve_lines`; or a live request the drain cut
    before any attempt, which looks the same): stored only when no request row of its
    request is, and replaced by the request's own row when that comes later
    (:mod:`~trioproxy.ledger.provisional`). A request whose final records' journal append
    failed (a full disk) was written to the database, its intents' lines still on disk:
    after a crash, recovery made up a second request row, and the request's cost counted
    twice in the ledger."""
    return (
        record.kind == "request" and record.status == 0 and record.target is None
        and record.outcome == "interrupted"
    )  # fmt: skip


__all__ = [
    "COLUMNS",
    "FIELDS",
    "KEY_COLUMNS",
    "LEGACY_MONEY",
    "METRICS",
    "UsdViews",
    "column_ddl",
    "default_sql",
    "from_row",
    "made_up",
    "pg_type",
    "sqlite_type",
    "to_dict",
    "to_row",
    "upsert_tail",
]
