"""The ledger writer: the durable :class:`UsageSink`.

With a :class:`~trioproxy.ledger.journal.Journal`, ``submit`` first appends the record to the
journal (``submit_all``: a request's final records, in one write; page cache: survives the
death of the process; fsync'd every ``fsync_interval`` seconds), and ``intend`` journals the provisional record of an upstream call about to be made;
a journal entry is released once its record is in the database or fsync'd in the spool.

``submit`` never blocks and never raises: it puts the record in a bounded memory channel, or,
when the channel is full (or the writer is closed), appends it to the spool file synchronously
(written, not fsync'd; the writer fsyncs it with its next batch). ``run`` (started with
``nursery.start`` in the app's lifetime nursery) drains the channel in batches of up to
``batch_size`` records or ``batch_interval`` seconds and writes each batch to the backend
within ``write_timeout``.

When a write fails or times out, the batch goes to the spool (fsync'd), the database is marked
down and retried with exponential backoff (``retry_min`` doubling to ``retry_max``); while it is
down, batches go straight to the spool. When a write or probe succeeds again, the spool is
claimed and replayed in batches. Replays are safe to repeat: the backend ignores records whose
``(request_id, kind, attempt, target)`` key it already has (a write that timed out on our side
but committed on the server, or a crash between a replay write and the spool deletion, cannot
double-count).

Shutdown (``aclose``, or cancellation of ``run``) is shielded and bounded by
``shutdown_timeout``: pending records go to the database if it answers within
``shutdown_db_timeout``, else to the spool; whatever is left when the deadline hits is spooled
synchronously. The next ``run`` (any process sharing ``state_dir``) replays the spool.

A state disk that refuses writes (full, read-only) is an expected condition, not a crash: a
batch neither the database nor the spool takes is held in memory (bounded:
:data:`~trioproxy.ledger.spooler.HOLD_CAPACITY`) with its journal entries, and retried every
:data:`HOLD_RETRY` seconds, to the database if it takes writes, else the spool, so that the
records land and the journal shrinks back once the disk frees, without a restart. A failed
maintenance step (fsync, rotation, recovery, replay) is a log line; the loop goes on. A
shutdown that cannot spool what is held leaves it in :attr:`Spooler.held` for the owner: the
ledger service hands it to its next writer, or counts it lost (a journaled one is recovered
by the next start).

The database side (writes within a bound, up or down, backoff) is
:class:`~trioproxy.ledger.db_link.DatabaseLink`; the disk side (overflow, spooling, fsync,
replay) is :class:`~trioproxy.ledger.spooler.Spooler`; this module batches and schedules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.db_link import DatabaseLink
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.spooler import Entry, Spooler, disk_error, release
from trioproxy.telemetry.log_every import LogEvery

log = logging.getLogger("trioproxy.ledger")

CAPACITY = 10_000
"""Records buffered in memory before ``submit`` spills to the spool file."""
BATCH_SIZE = 500
BATCH_INTERVAL = 0.2
"""Seconds to wait for a batch to fill after its first record."""
WRITE_TIMEOUT = 10.0
"""Seconds one batch write may take before it counts as a failure (and is spooled)."""
RETRY_MIN = 0.5
RETRY_MAX = 30.0
"""Backoff bounds (seconds) between database retries while it is down."""
SPOOL_CHECK_INTERVAL = 60.0
"""Seconds between checks for spool files left by other processes."""
RETENTION_INTERVAL = 3600.0
SHUTDOWN_TIMEOUT = 10.0
"""Bound on the whole shutdown flush."""
SHUTDOWN_DB_TIMEOUT = 3.0
"""Bound on database writes during the shutdown flush; after it, records are spooled."""
FSYNC_INTERVAL = 1.0
"""Seconds between fsyncs of the journal: what a power loss can take (a process death: none)."""
HOLD_RETRY = 1.0
"""Seconds between tries to write the records held in memory while the state disk refuses
writes (a try costs one failed write of one batch)."""


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    buffered: int
    submitted: int
    overflowed: int
    """Records ``submit`` put in the spool because the channel was full or closed."""
    written: int
    """New records stored in the database (replays included)."""
    duplicates: int
    """Records the database already had (replays after partial writes)."""
    spooled: int
    """Records the writer put in the spool (database down, timed out, shutdown)."""
    replayed: int
    """Records read back from the spool and written to the database."""
    lost: int
    """Records that could be neither written, spooled nor held in memory."""
    held: int
    """Records held in memory now: the state disk refused them (also in ``buffered``)."""
    held_total: int
    """Records ever held in memory because the state disk refused them."""
    db_up: bool
    last_error: str | None


class LedgerWriter:
    def __init__(
        self,
        backend: LedgerBackend,
        spool: Spool | str | Path,
        *,
        capacity: int = CAPACITY,
        batch_size: int = BATCH_SIZE,
        batch_interval: float = BATCH_INTERVAL,
        write_timeout: float = WRITE_TIMEOUT,
        retry_min: float = RETRY_MIN,
        retry_max: float = RETRY_MAX,
        retention_days: int | None = None,
        retention_interval: float = RETENTION_INTERVAL,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        shutdown_db_timeout: float = SHUTDOWN_DB_TIMEOUT,
        wall_clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        owns_journal: bool = True,
        fsync_interval: float = FSYNC_INTERVAL,
    ) -> None:
        self.db = DatabaseLink(backend, retry_min, retry_max)
        self.disk = Spooler(spool if isinstance(spool, Spool) else Spool(spool), journal)
        self.journal = journal
        self._owns_journal = owns_journal
        self._fsync_interval = fsync_interval
        self._next_fsync = 0.0
        self._send, self._receive = trio.open_memory_channel[Entry](capacity)
        self._batch_size = batch_size
        self._batch_interval = batch_interval
        self._write_timeout = write_timeout
        self._retention_days = retention_days
        self._retention_interval = retention_interval
        self._shutdown_timeout = shutdown_timeout
        self._shutdown_db_timeout = shutdown_db_timeout
        self._wall_clock = wall_clock
        self._pending: list[Entry] = []
        self._next_hold_retry = 0.0
        self._next_disk_try = 0.0
        """After a failed disk upkeep step: when the next (not every turn of the loop)."""
        self._disk_log = LogEvery()
        self._next_spool_check = 0.0
        self._next_retention = 0.0
        self._retention_removed = 0
        """Removed so far by the retention round in progress (logged once it ends)."""
        self._running = False
        self._done = trio.Event()
        self.on_recovered: Callable[[list[UsageRecord]], None] | None = None
        """Told the records recovered from dead processes' journals, once they are spooled
        (the budget settles those processes' open reservations: ``pipeline/dead_reservations.py``);
        it returns at once."""
        self._submitted = 0

    @property
    def backend(self) -> LedgerBackend:
        return self.db.backend

    @property
    def spool(self) -> Spool:
        return self.disk.spool

    # -- hot path -----------------------------------------------------------------------
    def submit(self, record: UsageRecord) -> None:
        seq = self.journal.append(record) if self.journal is not None else -1
        self._enqueue(seq, record)

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        """One request's final records: journaled in one write, then queued one by one."""
        seq = self.journal.append_all(records) if self.journal is not None else -1
        for record in records:
            self._enqueue(seq, record)

    def _enqueue(self, seq: int, record: UsageRecord) -> None:
        self._submitted += 1
        try:
            self._send.send_nowait((seq, record))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.disk.overflow(seq, record)

    def intend(self, record: UsageRecord) -> int:
        """Journal the provisional record of an upstream call about to be made; it stands if
        the process dies before the request's records are submitted. Returns the token to
        :meth:`resolve` once they are."""
        return self.journal.append(record, intent=True) if self.journal is not None else -1

    def resolve(self, token: int) -> None:
        if self.journal is not None:
            self.journal.done(token)

    def statistics(self) -> LedgerStatistics:
        db, disk = self.db, self.disk
        return LedgerStatistics(
            buffered=self._receive.statistics().current_buffer_used
            + len(self._pending)
            + len(disk.held),
            submitted=self._submitted,
            overflowed=disk.overflowed,
            written=db.written,
            duplicates=db.duplicates,
            spooled=disk.spooled,
            replayed=disk.replayed,
            lost=disk.lost,
            held=len(disk.held),
            held_total=disk.held_total,
            db_up=db.up,
            last_error=db.last_error,
        )

    # -- lifetime -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        try:
            await self._maintain()
            task_status.started()
            while await self._collect():
                await self._write_pending()
                await self._maintain()
            await self._write_pending()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    with trio.move_on_after(self._shutdown_timeout):
                        await self._flush_on_exit()
                except OSError as exc:  # whatever is left is spooled (or held) below
                    log.error("ledger: shutdown flush failed: %s", disk_error(exc))
                finally:
                    self._spool_rest_now()
                    self._leave_journal()
                    self._running = False
                    self._done.set()

    async def aclose(self) -> None:
        """Stop accepting records into the channel and flush everything (bounded)."""
        self._send.close()
        if self._running:
            with trio.CancelScope(shield=True), trio.move_on_after(self._shutdown_timeout + 1):
                await self._done.wait()
        else:
            self._spool_rest_now()
            self._leave_journal()

    def _leave_journal(self) -> None:
        """Close the journal we own; hand one we were given (the ledger service's, kept across
        writer restarts) back with its finished segments deleted, and what is held with it."""
        if self._owns_journal:
            if self.journal is not None:
                try:
                    self.journal.close()
                except OSError as exc:  # what is not finished stays on disk for the next start
                    log.error("ledger journal close failed: %s", disk_error(exc))
            self.abandon_held()
        elif self.journal is not None:
            try:
                self.journal.rotate()
            except OSError as exc:
                log.error("ledger journal rotation failed: %s", disk_error(exc))

    def abandon_held(self) -> None:
        """At the end: what is held in memory is lost (a journaled record stays in the
        journal, which the next start recovers)."""
        held = self.disk.take_held()
        if held:
            journaled = sum(1 for seq, _ in held if seq >= 0)
            self.disk.lose(len(held), f"held in memory at shutdown, the state disk refused "
                           f"them ({journaled} of them stay in the journal for the next start)")  # fmt: skip

    # -- batching -----------------------------------------------------------------------
    async def _collect(self) -> bool:
        """Fill ``_pending``; False once the channel is closed and drained."""
        now = trio.current_time()
        wait = (
            max(self.db.retry_at, self._next_disk_try) - now
            if not self.db.up else SPOOL_CHECK_INTERVAL
        )  # fmt: skip
        if self.journal is not None:
            wait = min(wait, self._next_fsync - now)
        if self.disk.held:
            wait = min(wait, self._next_hold_retry - now)
        if self.db.up:
            wait = min(wait, self._next_retention - now)
        with trio.move_on_after(max(wait, 0.0)):
            if not await self._take():
                return False
        if not self._pending:
            return True
        with trio.move_on_after(self._batch_interval):
            while len(self._pending) < self._batch_size:
                if not await self._take():
                    return False
        return True

    async def _take(self) -> bool:
        """One record into ``_pending``: one waiting (taken without a checkpoint, so a wait
        of 0, maintenance due, still takes it), else the next to come; False once the channel
        is closed and drained."""
        try:
            self._pending.append(self._receive.receive_nowait())
        except trio.WouldBlock:
            try:
                self._pending.append(await self._receive.receive())
            except trio.EndOfChannel:
                return False
        except trio.EndOfChannel:
            return False
        return True

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        if self.db.may_write(trio.current_time()):
            if await self.db.write([r for _, r in self._pending], self._write_timeout):
                release(self.journal, (seq for seq, _ in self._pending))
                self._pending = []
                return
        await self.disk.spool_entries(self._pending)
        self._pending = []

    def _spool_rest_now(self) -> None:
        """Synchronously spool everything not yet durable; close the channel so later
        submits spool directly."""
        while True:
            try:
                self._pending.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        self._receive.close()
        pending, self._pending = self._pending, []
        entries = self.disk.take_held() + pending
        if entries:
            try:
                self.disk.spool_now(entries)
            except OSError as exc:  # kept for the owner (_leave_journal)
                self.disk.hold(entries, exc, new=len(pending))
                return
            release(self.journal, (seq for seq, _ in entries))

    async def _flush_on_exit(self) -> None:
        while True:
            try:
                self._pending.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        while self._pending and self.db.up:
            batch = self._pending[: self._batch_size]
            if not await self.db.write([r for _, r in batch], self._shutdown_db_timeout):
                break
            release(self.journal, (seq for seq, _ in batch))
            del self._pending[: len(batch)]
        if self._pending:
            await self.disk.spool_entries(self._pending)
            self._pending = []
        if self.disk.held:
            await self.disk.drain_held(self._batch_size)
        if self.disk.unsynced:
            await self.disk.sync()

    # -- spool replay and retention ----------------------------------------------------------
    async def _maintain(self) -> None:
        """The writer's disk and database upkeep; a step the state disk refuses is logged
        (once an interval) and retried at its next turn, never the writer's end."""
        now = trio.current_time()
        if self.disk.held and now >= self._next_hold_retry:
            self._next_hold_retry = now + HOLD_RETRY
            await self._drain_held()
        try:
            await self._maintain_disk(now)
        except OSError as exc:
            self._next_disk_try = now + HOLD_RETRY
            if (skipped := self._disk_log.due()) is not None:
                log.error("ledger: disk upkeep failed, retried at its next turn: %s (%d more "
                          "since the last such line)", disk_error(exc), skipped)  # fmt: skip
        if now >= self._next_retention and self.db.up:  # (the minutes' rows go either way)
            self._next_retention = now + self._retention_interval
            try:
                with trio.fail_after(self._write_timeout):
                    n, more = await self.backend.enforce_retention(
                        now=self._wall_clock(), retention_days=self._retention_days
                    )
            except Exception as exc:
                log.warning("ledger retention failed: %s", exc)
                return
            self._retention_removed += n
            if more:  # the next batch after the next write: records never wait on a whole day
                self._next_retention = now
            elif self._retention_removed:
                log.info("ledger retention removed %d raw partitions/rows",
                         self._retention_removed)  # fmt: skip
                self._retention_removed = 0

    async def _drain_held(self) -> None:
        """The records held in memory: to the database if it takes writes, else the spool,
        a batch at a time, until one is refused."""
        disk, written = self.disk, 0
        while disk.held and self.db.may_write(trio.current_time()):
            batch = disk.held[: self._batch_size]  # only appended to meanwhile
            if not await self.db.write([r for _, r in batch], self._write_timeout):
                break
            del disk.held[: len(batch)]
            release(self.journal, (seq for seq, _ in batch))
            written += len(batch)
        if written and not disk.held:
            log.warning("ledger: %d records held in memory are in the database", written)
        if disk.held:
            await disk.drain_held(self._batch_size)

    async def _maintain_disk(self, now: float) -> None:
        if self.disk.unsynced:
            await self.disk.sync()
        if self.journal is not None and now >= self._next_fsync:
            self._next_fsync = now + self._fsync_interval
            await trio.to_thread.run_sync(self.journal.sync)
            self.journal.rotate()
        if now >= self._next_spool_check:
            self._next_spool_check = now + SPOOL_CHECK_INTERVAL
            self.disk.dirty = True
            if self.journal is not None:
                found: list[UsageRecord] = []
                await trio.to_thread.run_sync(self.journal.recover, self.spool, found)
                if found and self.on_recovered is not None:
                    try:
                        self.on_recovered(found)
                    except Exception:  # the records are spooled: only the settle is lost
                        log.exception("handing on %d recovered records failed", len(found))
        if self.disk.dirty and self.db.may_write(now) and now >= self._next_disk_try:
            await self.disk.replay(self.db, self._batch_size, self._write_timeout)


__all__ = ["LedgerStatistics", "LedgerWriter"]
