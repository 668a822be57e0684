"""The admin store's database: one SQL text for both engines, how it is called, one transaction.

The tables (:mod:`.accounts_table`, :mod:`.keys_table`, :mod:`.history_table`) write their
SQL once, with ``?`` placeholders and syntax both SQLite (3.35+) and PostgreSQL accept
(``ON CONFLICT ... DO UPDATE``, ``RETURNING``, ``"user"`` quoted), against :class:`Sql`, one
connection in a worker thread. An :class:`Engine` supplies it:

* :class:`~trioproxy.admin.sqlite_engine.SqliteEngine` (the default): ``admin.sqlite3`` in
  ``storage.state_dir``, shared by the worker processes of one host (WAL, ``busy_timeout``);
* :class:`~trioproxy.admin.pg_engine.PgEngine` when ``storage.database_url`` is set: the
  deployment's PostgreSQL, shared by every instance on every host.

Every call runs in a worker thread behind the engine's limiter and under
``trio.fail_after(CALL_TIMEOUT_S)``; a database error reaches the caller as
:class:`StoreError` (an ``OSError``), whichever engine raised it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import trio

from trioproxy.errors import postgres_errors

T = TypeVar("T")
CALL_TIMEOUT_S = 5.0


class StoreError(OSError):
    """The admin store's database failed or could not be reached (either engine)."""


def driver_errors() -> tuple[type[BaseException], ...]:
    """Either engine's driver errors (psycopg's only once a PostgreSQL store loaded it)."""
    return (sqlite3.Error, *postgres_errors())


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Sql(Protocol):
    """One connection, used from the store's worker thread; ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...
    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction (statements otherwise commit one by one)."""
        ...


class Engine(Protocol):
    """Where the tables live: runs ``fn`` on a connection in a worker thread."""

    async def run(self, fn: Callable[[Sql], T]) -> T: ...
    def close(self) -> None: ...


def schema_sql(tables: str, *, serial: str) -> list[str]:
    """The tables' DDL as statements; ``{serial}`` is the engine's auto-numbered key."""
    return [s.strip() for s in tables.format(serial=serial).split(";") if s.strip()]


class AdminDb:
    """The engine and how to call it; the tables come from the classes built on it."""

    SCHEMA = ""
    """Every table's DDL (``CREATE ... IF NOT EXISTS``), set by the composed store."""
    MIGRATIONS: tuple[str, ...] = ()
    """SQLite columns added after a release; each runs once (a second worker finds it done).
    A PostgreSQL store is younger than every one of them: its DDL has them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _run(self, fn: Callable[[Sql], T]) -> T:
        try:
            with trio.fail_after(CALL_TIMEOUT_S):
                return await self.engine.run(fn)
        except driver_errors() as exc:
            raise StoreError(f"admin store: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.engine.close()


def teams_out(teams: frozenset[str] | None) -> str | None:
    return None if teams is None else json.dumps(sorted(teams))


def teams_in(raw: str | None) -> frozenset[str] | None:
    return None if raw is None else frozenset(json.loads(raw))


__all__ = ["CALL_TIMEOUT_S", "AdminDb", "Cursor", "Engine", "Sql", "StoreError", "schema_sql",
           "teams_in", "teams_out"]  # fmt: skip
