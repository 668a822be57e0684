"""The SQLite budget store's group commit: batches, wake-ups, cancellation, a failing batch."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

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
    """The run ends while its batch still holds the worker thread; the next run's first
    caller arrives before that batch is over. It does not wait on the finished run's
    delivery (that run is gone): it starts a batch of its own, which takes the connection
    once the abandoned batch has committed. (The old code left it waiting for good.)"""
    gc = GroupCommit(db)
    gate = threading.Event()

    async def abandon() -> None:
        async with trio.open_nursery() as nursery:
            await _blocked_first_batch(gc, gate, trio.Event(), nursery)
            nursery.cancel_scope.cancel()

    trio.run(abandon)
    assert gc._running is not None  # the abandoned batch still holds its thread

    async def again() -> str:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                answer: list[str] = []

                async def ask() -> None:
                    answer.append(await gc.run(_insert("after")))

                nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()  # asked, while the batch holds
                gate.set()
            return answer[0]

    assert trio.run(again) == "after"
    assert {r[0] for r in db.execute("SELECT v FROM t")} == {"first", "after"}


@pytest.mark.parametrize("failing_start", [1, 2])
def test_a_batch_whose_thread_cannot_start_answers_its_callers_and_the_next_one_runs(
    db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, failing_start: int
) -> None:
    """No thread for a batch (``can't start new thread``): its callers get StoreUnavailable
    at once, nothing stays marked in flight, and the next call runs. The failing start is
    the first batch (started by a caller) or the second (started as the first ends, in a
    run-loop callback: it must not escape into the run loop)."""
    real = trio.lowlevel.start_thread_soon
    starts = [0]

    def flaky(*args: Any, **kwargs: Any) -> None:
        starts[0] += 1
        if starts[0] == failing_start:
            raise RuntimeError("can't start new thread")
        real(*args, **kwargs)

    monkeypatch.setattr(trio.lowlevel, "start_thread_soon", flaky)
    gc = GroupCommit(db)
    gate = threading.Event()

    def first(conn: sqlite3.Connection) -> str:
        gate.wait(30)
        return "first"

    async def main() -> dict[str, object]:
        got: dict[str, object] = {}

        async def call(name: str, fn: Callable[[sqlite3.Connection], str]) -> None:
            try:
                got[name] = await gc.run(fn)
            except StoreUnavailable as exc:
                got[name] = exc

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "first", first)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(call, "second", _insert("second"))
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
            got["third"] = await gc.run(_insert("third"))
        return got

    got = trio.run(main)
    failed = "first" if failing_start == 1 else "second"
    assert isinstance(got[failed], StoreUnavailable) and "not started" in str(got[failed])
    assert [k for k, v in got.items() if not isinstance(v, StoreUnavailable)] == [
        k for k in ("first", "second", "third") if k != failed
    ]
    assert gc._running is None
