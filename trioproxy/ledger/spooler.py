"""The ledger writer's records on disk: what goes to the spool file, when it is fsync'd, and
its replay into the database.

``overflow`` appends a record ``submit`` could not queue (not fsync'd: the next batch's
fsync covers it); ``spool`` writes a batch the database did not take, fsync'd, in a thread;
``replay`` claims spool files (this process's and those left by others) and writes them back
in batches. A record's journal entry is released once the record is durable here or in the
database (:func:`release`).

A state disk that refuses writes (full: ENOSPC, read-only: EROFS, any ``OSError``) does not
lose a record: what the spool would not take is *held* in memory (:attr:`Spooler.held`, at
most :data:`HOLD_CAPACITY` records), its journal entry kept, and written by the writer (to the
database, else the spool) once the disk or the database takes it again, without a restart
(a full disk once dropped every record of its 25 s: 1,301 served requests never recorded).
One log line per interval says records are held and why. Near the bound
(:data:`HOLD_HEADROOM`) the data plane refuses new requests with a 503 until records drain
(:meth:`Spooler.refusing`, ``LedgerService.cannot_record``); past it a record is lost,
counted (``lost``) and logged, and ``/readyz`` reports it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import trio

from trioproxy.ledger.db_link import DatabaseLink
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.telemetry.log_every import LogEvery

log = logging.getLogger("trioproxy.ledger")

Entry = tuple[int, UsageRecord]
"""A record and its journal segment (-1: not journaled)."""

HOLD_CAPACITY = 50_000
"""Records held in memory while the state disk refuses writes: about a minute of a busy
worker's records (two a request at ~400 requests/s), ~50 MB at ~1 KB a record, so that a full
disk an operator frees within minutes costs no record and a disk that stays full cannot
take the worker's memory."""
HOLD_HEADROOM = 5_000
"""Once fewer than this many records fit in the hold, the data plane refuses new requests
(503, :meth:`Spooler.refusing`): the records of the requests already in flight (a few each,
``server.max_in_flight`` of them) still fit, so none is served unrecorded."""


def disk_error(exc: OSError, path: Path | str | None = None) -> str:
    """``ENOSPC (No space left on device) at <path>``: what a disk error log line names."""
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    where = exc.filename if exc.filename is not None else path
    return f"{name} ({exc.strerror or exc}) at {where}" if where is not None else f"{name} ({exc})"


def release(journal: Journal | None, seqs: Iterable[int]) -> None:
    """These records are durable elsewhere: their journal entries may go."""
    if journal is not None:
        for seq in seqs:
            journal.done(seq)


class Spooler:
    def __init__(self, spool: Spool, journal: Journal | None) -> None:
        self.spool = spool
        self.journal = journal
        self.dirty = True
        """The spool may hold records to replay (checked once at start)."""
        self.unsynced = False
        """Overflow appends are waiting for an fsync."""
        self.overflowed = 0
        self.spooled = 0
        self.replayed = 0
        self.lost = 0
        self._overflow_seqs: list[int] = []
        """Journal segments of records appended to the spool without fsync."""
        self._lost_log = LogEvery()
        self.lost_at = -math.inf
        """``time.monotonic()`` of the last record lost."""
        self.held: list[Entry] = []
        """Records the disk refused, kept in memory until it (or the database) takes them."""
        self.hold_capacity = HOLD_CAPACITY
        self.held_total = 0
        """Records ever held (a record held again after a failed retry is not counted
        again)."""
        self._hold_log = LogEvery()

    def overflow(self, seq: int, record: UsageRecord) -> None:
        """Append a record the channel could not take (synchronous, not fsync'd); held in
        memory if the disk refuses it (or already refused others: the writer retries)."""
        if self.held:
            self.hold([(seq, record)], None, new=1)
            return
        try:
            self.spool.append([record], fsync=False)
        except OSError as exc:
            self.hold([(seq, record)], exc, new=1)
            return
        self.overflowed += 1
        self._overflow_seqs.append(seq)
        self.unsynced = self.dirty = True

    def hold(self, entries: list[Entry], exc: OSError | None, *, new: int) -> None:
        """Keep ``entries`` in memory (the first ``new`` of them not held before); past
        :attr:`hold_capacity` the rest are dropped from memory, counted as lost and logged.
        A dropped record that was journaled keeps its journal line: the next start recovers
        it (so "lost" overcounts those), and since segments are deleted oldest first, its
        segment and every later one stay on disk until that start (the journal does not
        shrink back after such an episode)."""
        room = max(self.hold_capacity - len(self.held), 0)
        kept, dropped = entries[:room], entries[room:]
        self.held.extend(kept)
        self.held_total += min(new, len(kept))
        if exc is not None and (skipped := self._hold_log.due()) is not None:
            log.error("ledger: the state disk refuses writes (%s): %d records held in memory "
                      "(at most %d) until it or the database takes them (%d such failures "
                      "since the last such line; trioproxy_ledger_held_records_total counts "
                      "them)", disk_error(exc, self.spool.path), len(self.held),
                      self.hold_capacity, skipped)  # fmt: skip
        if dropped:
            self.lose(len(dropped), f"{len(self.held)} records already held in memory, the "
                      "bound (HOLD_CAPACITY); those journaled are recovered at the next start, "
                      "and the journal keeps its segments until then")  # fmt: skip

    def refusing(self) -> bool:
        """The hold is nearly full: new requests must wait until records drain."""
        return len(self.held) > self.hold_capacity - HOLD_HEADROOM

    def lose(self, n: int, why: str) -> None:
        self.lost += n
        self.lost_at = time.monotonic()
        if (skipped := self._lost_log.due()) is not None:
            log.error("ledger: %d records lost: %s (%d more since the last such line; "
                      "trioproxy_ledger_lost_records_total counts them)", n, why, skipped)  # fmt: skip

    def take_held(self) -> list[Entry]:
        held, self.held = self.held, []
        return held

    async def spool_entries(self, batch: list[Entry]) -> None:
        """Spool ``batch`` (fsync'd, in a thread); held in memory if the disk refuses it, or
        refused the records held already (:meth:`drain_held` retries, a chunk at a time: not
        every batch a write of all that is held). Never raises ``OSError``."""
        if self.held:
            self.hold(batch, None, new=len(batch))
            return
        overflowed = self._overflow_seqs
        self._overflow_seqs = []
        self.unsynced = False  # this fsync covers the overflow appends made so far
        try:
            await trio.to_thread.run_sync(self.spool_now, batch)
        except OSError as exc:
            self._overflow_seqs[:0] = overflowed  # not fsync'd: their entries stay
            self.unsynced = bool(self._overflow_seqs)
            self.hold(batch, exc, new=len(batch))
            return
        release(self.journal, (seq for seq, _ in batch))
        release(self.journal, overflowed)

    async def drain_held(self, chunk: int) -> int:
        """Spool the held records, ``chunk`` at a time, until the disk refuses one; return
        how many are still held. Never raises ``OSError``."""
        done = 0
        while self.held:
            batch = self.held[:chunk]  # only appended to meanwhile (overflow, hold)
            try:
                await trio.to_thread.run_sync(self.spool_now, batch)
            except OSError as exc:
                if (skipped := self._hold_log.due()) is not None:
                    log.error("ledger: the state disk still refuses writes (%s): %d records "
                              "held in memory (%d such failures since the last such line)",
                              disk_error(exc, self.spool.path), len(self.held), skipped)  # fmt: skip
                break
            del self.held[: len(batch)]
            release(self.journal, (seq for seq, _ in batch))
            done += len(batch)
        if done and not self.held:
            log.warning("ledger: the state disk takes writes again: %d held records spooled",
                        done)  # fmt: skip
        return len(self.held)

    def spool_now(self, batch: list[Entry]) -> None:
        """Blocking (a thread, or the last synchronous flush); fsyncs the spool."""
        self.spool.append((r for _, r in batch), fsync=True)
        self.spooled += len(batch)
        self.dirty = True

    async def sync(self) -> None:
        """fsync the overflow appends; their journal entries may go. Raises ``OSError``
        (the entries stay) when the fsync fails."""
        overflowed = self._overflow_seqs
        self._overflow_seqs = []
        self.unsynced = False
        try:
            await trio.to_thread.run_sync(self.spool.sync)
        except OSError:
            self._overflow_seqs[:0] = overflowed
            self.unsynced = True
            raise
        release(self.journal, overflowed)

    async def replay(self, link: DatabaseLink, batch_size: int, bound: float) -> None:
        """Write what the spool holds to the database. Records spooled while it runs (an
        overflow, a batch while the database is down) set ``dirty`` again: they may be in a
        file this replay did not claim."""
        self.dirty = False
        try:
            if not await trio.to_thread.run_sync(self.spool.has_pending):
                return
            for path in await trio.to_thread.run_sync(self.spool.claim):
                records = self.spool.read(path)
                while chunk := await trio.to_thread.run_sync(_take, records, batch_size):
                    if not await link.write(chunk, bound):
                        self.dirty = True  # the claimed file stays; the next replay takes it
                        return
                    self.replayed += len(chunk)
                await trio.to_thread.run_sync(self.spool.release, path)
                log.info("ledger spool %s replayed", path.name)
        except BaseException:
            self.dirty = True
            raise


def _take(it: Iterator[UsageRecord], n: int) -> list[UsageRecord]:
    return list(itertools.islice(it, n))


__all__ = ["HOLD_CAPACITY", "HOLD_HEADROOM", "Entry", "Spooler", "disk_error", "release"]
