"""The admin store in one SQLite file (``admin.sqlite3`` in ``storage.state_dir``).

Every worker process of a host opens the same file (WAL, ``busy_timeout``), so a change made
on one worker holds on every worker at once; instances on other hosts do not see it (configure
``storage.database_url`` for :mod:`.pg_engine`). One connection, one thread at a time,
closing included (:class:`~trioproxy.store.sqlite_thread.SerialConnection`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from trioproxy.admin.db import Cursor, schema_sql
from trioproxy.store.sqlite_file import immediate, open_wal
from trioproxy.store.sqlite_thread import SerialConnection

T = TypeVar("T")
FILE_NAME = "admin.sqlite3"
BUSY_TIMEOUT_MS = 4_000
SERIAL = "INTEGER PRIMARY KEY AUTOINCREMENT"


class SqliteSql:
    """:class:`~trioproxy.admin.db.Sql` over a connection in autocommit mode."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with immediate(self.conn):
            yield


class SqliteEngine:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._sql = SqliteSql(conn)
        self._conn = SerialConnection(lambda: conn)  # open already: the first call takes it

    @classmethod
    def open_sync(
        cls, state_dir: str | Path, tables: str, migrations: Sequence[str]
    ) -> SqliteEngine:
        """Open (creating the file and schema); cheap, safe before the event loop runs."""
        path = Path(state_dir) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = open_wal(str(path), busy_timeout_s=BUSY_TIMEOUT_MS / 1000)
        for statement in schema_sql(tables, serial=SERIAL):
            conn.execute(statement)
        for sql in migrations:
            try:
                conn.execute(sql)
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
        return cls(conn)

    async def run(self, fn: Callable[[SqliteSql], T]) -> T:
        """``fn`` in a worker thread; after :meth:`close`, sqlite3.ProgrammingError (a driver
        error)."""
        return await self._conn.run(lambda _: fn(self._sql))

    def close(self) -> None:
        """Close the connection once no call runs on it (blocking: run it in a thread)."""
        self._conn.close()


__all__ = ["BUSY_TIMEOUT_MS", "FILE_NAME", "SqliteEngine", "SqliteSql"]
