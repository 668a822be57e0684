"""The admin store in one SQLite file (``admin.sqlite3`` in ``storage.state_dir``).

Every worker process of a host opens the same file (WAL, ``busy_timeout``), so a change made
on one worker holds on every worker at once; instances on other hosts do not see it (configure
``storage.database_url`` for :mod:`.pg_engine`). One connection, one thread at a time,
closing included: a call whose caller gave up (cancelled, its thread abandoned) still runs on
the connection, and :meth:`SqliteEngine.close` waits for it (closing a connection under a
running statement crashed the process: a segfault seen in a test run on a busy box).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import trio

from trioproxy.admin.db import Cursor, schema_sql
from trioproxy.store.sqlite_file import open_wal

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
        # autocommit mode (isolation_level=None): ``with conn:`` would open no transaction
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


class SqliteEngine:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._sql = SqliteSql(conn)
        self._limiter = trio.CapacityLimiter(1)
        self._using = threading.Lock()
        """Held by the thread running a call, and by :meth:`close`."""

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
        return await trio.to_thread.run_sync(
            self._call, fn, limiter=self._limiter, abandon_on_cancel=True
        )

    def _call(self, fn: Callable[[SqliteSql], T]) -> T:
        with self._using:
            return fn(self._sql)  # after close: sqlite3.ProgrammingError, a driver error

    def close(self) -> None:
        """Close the connection once no call runs on it (blocking: run it in a thread)."""
        with self._using:
            self._sql.conn.close()


__all__ = ["BUSY_TIMEOUT_MS", "FILE_NAME", "SqliteEngine", "SqliteSql"]
