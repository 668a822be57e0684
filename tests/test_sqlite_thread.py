"""The shared pieces of every embedded SQLite file's users (``store/sqlite_thread.py``,
``store/sqlite_file.immediate``): one call at a time from Trio, closing after it, and the
write transaction. The admin store's test of a call abandoned by its caller
(``test_admin_db.test_close_waits_for_a_call_whose_caller_gave_up``) covers the close's wait."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from trioproxy.store.sqlite_file import add_column, immediate, open_wal
from trioproxy.store.sqlite_thread import SerialConnection


async def test_calls_run_one_at_a_time_and_fail_after_close(tmp_path: Path) -> None:
    opened: list[sqlite3.Connection] = []

    def opener() -> sqlite3.Connection:
        opened.append(open_wal(str(tmp_path / "f.sqlite3"), busy_timeout_s=1))
        return opened[-1]

    conn = SerialConnection(opener)
    running = 0
    most = 0
    gate = threading.Event()

    def call(db: sqlite3.Connection) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        gate.wait(10)
        running -= 1
        return int(db.execute("SELECT 1").fetchone()[0])

    results: list[int] = []

    async def one() -> None:
        results.append(await conn.run(call))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert results == [1, 1, 1, 1] and most == 1 and len(opened) == 1  # opened once, lazily
    await trio.to_thread.run_sync(conn.close)
    with pytest.raises(sqlite3.ProgrammingError):
        await conn.run(call)
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")  # the connection itself is closed


async def test_an_open_that_failed_is_tried_again_by_the_next_call(tmp_path: Path) -> None:
    tries: list[int] = []

    def opener() -> sqlite3.Connection:
        tries.append(1)
        if len(tries) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return open_wal(str(tmp_path / "f.sqlite3"), busy_timeout_s=1)

    conn = SerialConnection(opener)
    with pytest.raises(sqlite3.OperationalError):
        await conn.run(lambda db: db.execute("SELECT 1").fetchone())
    assert await conn.run(lambda db: db.execute("SELECT 2").fetchone()) == (2,)
    assert len(tries) == 2


def test_immediate_commits_or_rolls_back(tmp_path: Path) -> None:
    db = open_wal(str(tmp_path / "f.sqlite3"), busy_timeout_s=1)
    db.execute("CREATE TABLE t(x)")
    with immediate(db):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), immediate(db):
        db.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    assert not db.in_transaction
    assert db.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_add_column_adds_and_fills_once(tmp_path: Path) -> None:
    db = open_wal(str(tmp_path / "f.sqlite3"), busy_timeout_s=1)
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (2)")
    add_column(db, "t", "y", "INTEGER", ("UPDATE t SET y = x * ?", (10,)))
    add_column(db, "t", "y", "INTEGER", ("UPDATE t SET y = -1", ()))  # there: nothing runs
    assert db.execute("SELECT x, y FROM t").fetchall() == [(2, 20)]
    assert not db.in_transaction
