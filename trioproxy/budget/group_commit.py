"""Group commit on one SQLite connection: concurrent operations of one process share one
``BEGIN IMMEDIATE`` transaction and one worker-thread call, and an operation that fails is
undone alone. The embedded budget store (:mod:`trioproxy.budget.sqlite_store`) runs every
operation through it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

from trioproxy.budget.store import StoreUnavailable

T = TypeVar("T")


class Op:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.done = False
        """Its batch ran (callers wait on the store's turn, not on their operation: a flag,
        not an event)."""


class GroupCommit:
    """The queue, the leader's turn and the batch transaction of one connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._queue: list[Op] = []
        self._leading = False
        self._turn = trio.Event()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction, group-committed with concurrent callers.

        A caller finding no batch running becomes the leader: it takes every
        queued operation, runs them in one worker-thread call inside one
        ``BEGIN IMMEDIATE`` transaction (one failing operation does not undo the others:
        :meth:`tx_batch`), commits once and wakes the callers;
        a caller whose operation was not in that batch leads the next one. Atomicity per operation is unchanged; the
        cost of a transaction and a thread hop is shared by the whole batch.
        """
        op = Op(fn)
        self._queue.append(op)
        try:
            while not op.done:
                if self._leading:
                    await self._turn.wait()
                else:
                    await self._lead_one_batch()
        except BaseException:
            if op in self._queue:  # cancelled before its batch started: it never runs
                self._queue.remove(op)
            raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    async def _lead_one_batch(self) -> None:
        """Run everything queued now as one transaction, then pass the turn on.

        Shielded: the batch holds other callers' operations. Bounded by SQLite's
        busy timeout. Leading one batch only keeps every caller's wait to about
        one batch behind the one running when it arrived.
        """
        self._leading = True
        try:
            with trio.CancelScope(shield=True):
                batch, self._queue = self._queue, []
                await trio.to_thread.run_sync(self.tx_batch, batch)
                for done in batch:
                    done.done = True
        finally:
            self._leading = False
            turn, self._turn = self._turn, trio.Event()
            turn.set()

    def tx_batch(self, batch: list[Op]) -> None:
        """One transaction for ``batch``. Optimistic: the operations run one after the other
        without a SAVEPOINT each (two statements fewer per operation); when one raises, the
        whole transaction is rolled back and the batch runs again with a SAVEPOINT around
        each operation, so the one that failed is undone alone and the others take effect
        (an operation is a function of the database alone: running it again is running it
        once). Failures are rare (a reservation id taken twice, an extend of a closed one)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    op.result = op.fn(db)
                except sqlite3.OperationalError:
                    raise
                except Exception:
                    break
            else:
                db.execute("COMMIT")
                return
            db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                op.result = op.error = None
                db.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(db)
                except sqlite3.OperationalError:
                    raise
                except Exception as exc:
                    db.execute("ROLLBACK TO op")
                    op.error = exc
                db.execute("RELEASE op")
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for op in batch:
                op.result, op.error = None, StoreUnavailable(f"sqlite: {exc}")


__all__ = ["GroupCommit", "Op"]
