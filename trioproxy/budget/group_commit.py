"""Group commit on one SQLite connection: concurrent operations of one process share one
``BEGIN IMMEDIATE`` transaction and one worker-thread call, and an operation that fails is
undone alone. The embedded budget store (:mod:`trioproxy.budget.sqlite_store`) runs every
operation through it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import trio

from trioproxy.budget.store import StoreUnavailable

if TYPE_CHECKING:
    from outcome import Outcome

T = TypeVar("T")


class Op:
    __slots__ = ("error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None


class GroupCommit:
    """The queue, the batch in flight and the batch transaction of one connection.

    No task leads a batch: a batch runs in a worker thread (``trio.lowlevel.start_thread_soon``)
    and its end is a callback in the run loop (``TrioToken.run_sync_soon``) that wakes the
    batch's callers and, when operations queued meanwhile, starts the next batch at once.
    Each caller is woken once, when its own batch has committed; the next batch does not wait
    for a scheduler turn to find a leader (on a saturated loop a turn is tens of
    milliseconds, and a request's admission and settle each went through one or two).
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._queue: list[Op] = []
        self._queued_done = trio.Event()
        """Set when the batch that will hold the queued operations has ended."""
        self._running: trio.lowlevel.TrioToken | None = None
        """The run whose batch is in flight (None: none). A caller of another run (the store
        outlives a ``trio.run`` in the CLI and the tests) starts its own batch: it must not
        wait on a delivery to a run that has ended."""
        self._connection = threading.Lock()
        """Held by the thread running a batch: batches of two runs never share the
        connection at once (one waits for the other)."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction, group-committed with concurrent callers.

        With no batch in flight the operation starts one at once; else it waits in the
        queue, and everything queued runs as the next batch as soon as the one in flight
        ends: one worker-thread call, one ``BEGIN IMMEDIATE`` transaction (one failing
        operation does not undo the others: :meth:`tx_batch`), one commit. A caller's wait is
        at most the rest of the batch in flight and its own. Cancelled while queued, the
        operation never runs; once its batch started, it runs whatever the caller does.
        """
        token = trio.lowlevel.current_trio_token()
        op = Op(fn)
        self._queue.append(op)
        done = self._queued_done
        if self._running is not token:
            self._start(token)
        try:
            await done.wait()
        except BaseException:
            if op in self._queue:  # cancelled before its batch started: it never runs
                self._queue.remove(op)
            raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def _start(self, token: trio.lowlevel.TrioToken) -> None:
        """Run everything queued now as one batch in a worker thread; its end is delivered
        to the run ``token`` names. If the thread cannot start (no thread left, an
        interrupt), the batch's callers are answered at once with StoreUnavailable and
        nothing is left marked in flight."""
        batch, self._queue = self._queue, []
        done, self._queued_done = self._queued_done, trio.Event()
        self._running = token

        def deliver(result: Outcome[None]) -> None:  # in the worker thread
            try:
                token.run_sync_soon(self._finish, token, batch, done, result)
            except trio.RunFinishedError:  # the run ended: nobody of it waits any more
                if self._running is token:
                    self._running = None

        try:
            trio.lowlevel.start_thread_soon(partial(self._locked_batch, batch), deliver)
        except BaseException as exc:
            self._running = None
            self._answer(batch, f"sqlite batch not started: {exc!r}")
            done.set()
            if not isinstance(exc, Exception):
                raise

    def _finish(
        self, token: trio.lowlevel.TrioToken, batch: list[Op], done: trio.Event,
        result: Outcome[None],
    ) -> None:  # fmt: skip
        """In the run loop, no task: answer the batch's callers, start the next batch (of
        the same run: the queued callers are this run's)."""
        if self._running is token:
            self._running = None
        try:
            result.unwrap()
        except BaseException as exc:  # the worker thread's (a bug in tx_batch): all are told
            self._answer(batch, f"sqlite batch: {exc!r}")
        done.set()
        if self._queue and self._running is None:
            self._start(token)

    @staticmethod
    def _answer(batch: list[Op], why: str) -> None:
        for op in batch:
            op.result, op.error = None, StoreUnavailable(why)

    def _locked_batch(self, batch: list[Op]) -> None:
        with self._connection:
            self.tx_batch(batch)

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
