"""The admin store's SQLite file: opening it, the worker-thread call, one transaction.

Every worker process of a host opens the same file (WAL, ``busy_timeout``), so a change made
on one worker holds on every worker at once. Every call runs in a worker thread behind a
``CapacityLimiter(1)`` and under ``trio.fail_after(CALL_TIMEOUT_S)``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self, TypeVar

import trio

T = TypeVar("T")
FILE_NAME = "admin.sqlite3"
CALL_TIMEOUT_S = 5.0
BUSY_TIMEOUT_MS = 4_000


class AdminDb:
    """The connection and how to call it; the tables come from the classes built on it."""

    SCHEMA = ""
    """Every table's DDL (``CREATE ... IF NOT EXISTS``), set by the composed store."""
    MIGRATIONS: tuple[str, ...] = ()
    """Columns added after a release; each runs once (a second worker finds it done)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    def open_sync(cls, state_dir: str | Path) -> Self:
        """Open (creating the file and schema); cheap, safe before the event loop runs."""
        path = Path(state_dir) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(cls.SCHEMA)
        for sql in cls.MIGRATIONS:
            try:
                conn.execute(sql)
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
        return cls(conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with trio.fail_after(CALL_TIMEOUT_S):
            return await trio.to_thread.run_sync(
                fn, self._conn, limiter=self._limiter, abandon_on_cancel=True
            )

    def close(self) -> None:
        self._conn.close()


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction. The connection is in autocommit mode (``isolation_level=None``),
    where ``with db:`` opens none: each statement would commit on its own."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def teams_out(teams: frozenset[str] | None) -> str | None:
    return None if teams is None else json.dumps(sorted(teams))


def teams_in(raw: str | None) -> frozenset[str] | None:
    return None if raw is None else frozenset(json.loads(raw))


__all__ = ["BUSY_TIMEOUT_MS", "CALL_TIMEOUT_S", "FILE_NAME", "AdminDb", "teams_in", "teams_out",
           "transaction"]  # fmt: skip
