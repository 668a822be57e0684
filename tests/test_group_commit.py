"""The SQLite budget store's group commit: batches, wake-ups, cancellation, a failing batch."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from trioproxy.budget.group_commit import GroupCommit, Op
from trioproxy.budget.store import StoreUnavailable


class Wakes(trio.abc.Instrument):
    """How often each task was scheduled to run again after it blocked."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.count[task.name] += 1


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(tmp_path / "g.db"), isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (v TEXT)")
    return conn


async def _blocked_first_batch(gc: GroupCommit, gate: threading.Event, entered: trio.Event,
                               nursery: trio.Nursery) -> None:  # fmt: skip
    """Start a batch that holds its worker thread until ``gate`` is set."""
    token = trio.lowlevel.current_trio_token()

    def hold(conn: sqlite3.Connection) -> str:
        token.run_sync_soon(entered.set)
        gate.wait(30)
        conn.execute("INSERT INTO t VALUES ('first')")
        return "first"

    async def first() -> None:
        assert await gc.run(hold) == "first"

    nursery.start_soon(first, name="first")
    await entered.wait()


async def test_operations_queued_behind_a_batch_are_woken_once_when_theirs_commits(
    db: sqlite3.Connection,
) -> None:
    """Operations that arrive while a batch is in flight run together as the next batch,
    started as the first ends; each caller is scheduled once, with its answer (the old
    leader-based commit woke them at the first batch's end to elect a leader, then again)."""
    gc = GroupCommit(db)
    gate, entered = threading.Event(), trio.Event()
    wakes = Wakes()
    results: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        await _blocked_first_batch(gc, gate, entered, nursery)

        async def one(name: str) -> None:
            def write(conn: sqlite3.Connection) -> str:
                conn.execute("INSERT INTO t VALUES (?)", (name,))
                return name

            results[name] = await gc.run(write)

        for name in ("b", "c", "d"):
            nursery.start_soon(one, name, name=name)
        await trio.testing.wait_all_tasks_blocked()
        assert len(gc._queue) == 3  # all three wait behind the batch in flight
        trio.lowlevel.add_instrument(wakes)
        gate.set()
    trio.lowlevel.remove_instrument(wakes)
    assert results == {"b": "b", "c": "c", "d": "d"}
    assert {n: wakes.count[n] for n in "bcd"} == {"b": 1, "c": 1, "d": 1}
    assert sorted(r[0] for r in db.execute("SELECT v FROM t")) == ["b", "c", "d", "first"]


async def test_a_cancelled_queued_operation_never_runs(db: sqlite3.Connection) -> None:
    gc = GroupCommit(db)
    gate, entered = threading.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        await _blocked_first_batch(gc, gate, entered, nursery)
        with trio.move_on_after(0) as scope:
            await gc.run(lambda conn: conn.execute("INSERT INTO t VALUES ('never')"))
        assert scope.cancelled_caught
        assert gc._queue == []
        gate.set()
    assert await gc.run(lambda conn: conn.execute("SELECT v FROM t").fetchall()) == [("first",)]


async def test_a_batch_that_breaks_answers_every_caller_and_the_next_one_runs(
    db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that escapes the batch transaction (not an operation's own error) reaches every
    caller of that batch as StoreUnavailable; the commit keeps working."""
    gc = GroupCommit(db)
    real = gc.tx_batch

    def broken(batch: list[Op]) -> None:
        monkeypatch.setattr(gc, "tx_batch", real)
        raise RuntimeError("boom")

    monkeypatch.setattr(gc, "tx_batch", broken)
    with pytest.raises(StoreUnavailable, match="boom"):
        await gc.run(lambda conn: 1)
    assert await gc.run(lambda conn: 2) == 2


def _insert(name: str) -> Callable[[sqlite3.Connection], str]:
    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES (?)", (name,))
        return name

    return write


def test_a_store_serves_one_run_after_another(db: sqlite3.Connection) -> None:
    """A batch's end goes to the run its caller is in, not to the first run the store saw
    (a store outlives ``trio.run`` in the CLI and the tests): the second run is answered."""
    gc = GroupCommit(db)

    async def once(name: str) -> str:
        with trio.fail_after(10):
            return await gc.run(_insert(name))

    assert trio.run(once, "first") == "first"
    assert trio.run(once, "second") == "second"


def test_a_run_that_ends_with_a_batch_in_flight_leaves_the_store_usable(
    db: sqlite3.Connection,
) -> None:
    """The run ends while its batch still holds the worker thread: that batch commits,
    nobody is told (the run is gone), and the next run's caller starts a batch of its own
    (the in-flight flag is cleared by the thread that found the run finished)."""
    gc = GroupCommit(db)
    gate = threading.Event()

    def hold(conn: sqlite3.Connection) -> str:
        gate.wait(30)
        conn.execute("INSERT INTO t VALUES ('held')")
        return "held"

    async def abandon() -> None:
        entered = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def hold_and_say(conn: sqlite3.Connection) -> str:
            token.run_sync_soon(entered.set)
            return hold(conn)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gc.run, hold_and_say)
            await entered.wait()
            nursery.cancel_scope.cancel()

    trio.run(abandon)
    assert gc._running  # the batch still holds its thread
    gate.set()
    deadline = time.monotonic() + 30  # observed state: the thread's delivery clears the flag
    while gc._running and time.monotonic() < deadline:
        threading.Event().wait(0.005)
    assert not gc._running

    async def again() -> str:
        with trio.fail_after(10):
            return await gc.run(_insert("after"))

    assert trio.run(again) == "after"
    assert {r[0] for r in db.execute("SELECT v FROM t")} == {"held", "after"}
