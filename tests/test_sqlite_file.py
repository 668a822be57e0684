"""Every embedded state file opens while another process holds a write lock on it at
start-up (``store/sqlite_file.py``): SQLite does not wait for the lock that switching a new
file to WAL needs, so a bare ``PRAGMA journal_mode=WAL`` failed at once ("database is
locked"); seen once when the control plane and a worker opened ``budgets.sqlite3``
together. The lock here is held by a second connection and released by the opener's own
first wait between tries, so no test depends on timing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from trioproxy.admin.store import FILE_NAME as ADMIN_FILE
from trioproxy.admin.store import AdminStore
from trioproxy.breakers.shared import SqliteBreakerKV
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.ledger.sqlite import SqliteLedger
from trioproxy.store import sqlite_file
from trioproxy.store.sqlite_file import open_wal


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A connection holding a write lock on a new file still in the default journal mode
    (what another process has in the middle of creating it)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE IF NOT EXISTS other(a)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO other VALUES (1)")
    return conn


@pytest.fixture
def released_on_first_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[sqlite3.Connection], list[float]]]:
    """Make the opener's first wait between two tries release ``holder``'s lock; the list
    it answers records each wait."""

    def arm(holder: sqlite3.Connection) -> list[float]:
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if holder.in_transaction:
                holder.execute("COMMIT")

        monkeypatch.setattr(sqlite_file, "time",
                            SimpleNamespace(monotonic=time.monotonic, sleep=sleep))  # fmt: skip
        return waits

    yield arm


def test_sqlite_itself_does_not_wait_for_the_switch_to_wal(tmp_path: Path) -> None:
    """Why the retries exist: the busy timeout does not cover the switch."""
    path = tmp_path / "f.sqlite3"
    holder = hold_write_lock(path)
    conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")
    assert time.monotonic() - started < 4.0  # it did not wait out the 5 s busy timeout
    holder.execute("COMMIT")


def test_open_wal_retries_until_the_lock_is_gone(
    tmp_path: Path, released_on_first_retry: Callable[[sqlite3.Connection], list[float]]
) -> None:
    path = tmp_path / "f.sqlite3"
    holder = hold_write_lock(path)
    waits = released_on_first_retry(holder)
    conn = open_wal(str(path), busy_timeout_s=5.0)
    assert waits == [sqlite_file.RETRY_S]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("SELECT a FROM other").fetchall() == [(1,)]  # the holder's write


def test_open_wal_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    holder = hold_write_lock(path)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        open_wal(str(path), busy_timeout_s=0.2)
    assert time.monotonic() - started >= 0.2
    holder.execute("COMMIT")


def test_a_file_already_in_wal_mode_opens_at_once(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    open_wal(str(path), busy_timeout_s=1.0).close()
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    conn = open_wal(str(path), busy_timeout_s=0.0)  # no retry allowed, none needed
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.execute("COMMIT")


OPENERS: dict[str, Callable[[Path], object]] = {
    "budgets.sqlite3": lambda p: SqliteStore(str(p)).close(),
    "breakers.sqlite3": lambda p: SqliteBreakerKV(str(p)),
    ADMIN_FILE: lambda p: AdminStore.open_sync(p.parent),
    "ledger.sqlite3": lambda p: trio.run(SqliteLedger.open, p),
}


@pytest.mark.parametrize("name", list(OPENERS))
def test_every_state_file_opens_while_another_process_creates_it(
    tmp_path: Path,
    released_on_first_retry: Callable[[sqlite3.Connection], list[float]],
    name: str,
) -> None:
    path = tmp_path / name
    waits = released_on_first_retry(hold_write_lock(path))
    OPENERS[name](path)
    assert waits  # it met the lock, waited, and opened
    check = sqlite3.connect(str(path))
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
