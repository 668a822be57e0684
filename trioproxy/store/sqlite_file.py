"""Opening one of the embedded state files (budgets, breakers, the admin store, the ledger)
in WAL mode, safely when several processes open it at once.

``serve`` starts its workers and the control plane together, and each opens the same files.
Switching a new file from SQLite's default journal to WAL needs a lock that SQLite does not
wait for: while another connection holds a write lock on a file still in the default mode,
``PRAGMA journal_mode=WAL`` fails at once with "database is locked" (the busy timeout does
not apply to it; ``tests/test_sqlite_file.py`` shows it on a bare connection). Seen once at
start-up on a loaded box: the control plane died and was restarted. :func:`open_wal` retries
the switch until the busy timeout has passed; a file already in WAL mode switches at once.

Blocking (``time.sleep`` between tries): call it before the event loop runs or in a thread.

:func:`immediate` is the write transaction of the admin store, the cache file and the
ledger's schema (the budgets' group commit and the ledger's batch write theirs: a savepoint
per operation, a retry row by row). :func:`add_column` migrates a table made before a column.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_S = 0.01
"""Between two tries of the switch to WAL."""
SCHEMA_WAIT_S = 120.0
"""How long an open waits for another process's write lock while it makes or migrates a
file's schema. The first start after an upgrade may build indexes over millions of rows
(~1.5 s per 2M ledger rows), and the other workers starting meanwhile wait for it instead of
failing at their operations' short busy timeout; after the schema, :func:`set_busy_timeout`
gives the connection its own."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def open_wal(path: str, *, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``synchronous=NORMAL``, autocommit
    (``isolation_level=None``), usable from any thread, with ``busy_timeout_s``."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    deadline = time.monotonic() + busy_timeout_s
    try:
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            else:
                if str(mode).lower() == "wal":
                    break
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError(
                        f"{path}: could not switch to WAL mode (still {mode!r})"
                    )
            time.sleep(RETRY_S)
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def add_column(
    conn: sqlite3.Connection, table: str, column: str, decl: str,
    *fill: tuple[str, tuple[object, ...]],
) -> None:  # fmt: skip
    """Add ``column`` (of ``decl``) to a ``table`` made before it, with the ``fill``
    statements in the same transaction; once, also when several processes open the file at
    once (the one that finds the column there already does nothing)."""
    if any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})")):
        return
    try:
        with immediate(conn):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            for sql, params in fill:
                conn.execute(sql, params)
    except sqlite3.OperationalError as exc:  # another process added it meanwhile
        if "duplicate column" not in str(exc):
            raise


def set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    """How long ``conn``'s statements wait for another process's lock from now on."""
    conn.execute(f"PRAGMA busy_timeout = {max(0, round(seconds * 1000))}")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction (the write lock taken at once, so it never fails
    half-way for want of it) on a connection in autocommit mode, where ``with conn:`` would
    open none: committed at the end, rolled back when the body raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite rolls some failures back itself (a full disk)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


__all__ = ["SCHEMA_WAIT_S", "add_column", "immediate", "open_wal", "set_busy_timeout"]
