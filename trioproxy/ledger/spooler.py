"""The ledger writer's records on disk: what goes to the spool file, when it is fsync'd, and
its replay into the database.

``overflow`` appends a record ``submit`` could not queue (not fsync'd: the next batch's
fsync covers it); ``spool`` writes a batch the database did not take, fsync'd, in a thread;
``replay`` claims spool files (this process's and those left by others) and writes them back
in batches. A record's journal entry is released once the record is durable here or in the
database (:func:`release`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator

import trio

from trioproxy.ledger.db_link import DatabaseLink
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spool import Spool
from trioproxy.telemetry.log_every import LogEvery

log = logging.getLogger("trioproxy.ledger")

Entry = tuple[int, UsageRecord]
"""A record and its journal segment (-1: not journaled)."""


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
        self._lost_log = LogEvery()
        self.lost_at = -math.inf
        """``time.monotonic()`` of the last record lost."""
        """Journal segments of records appended to the spool without fsync."""

    def overflow(self, seq: int, record: UsageRecord) -> None:
        """Append a record the channel could not take (synchronous, not fsync'd)."""
        try:
            self.spool.append([record], fsync=False)
        except OSError as exc:
            self.lost += 1
            self.lost_at = time.monotonic()
            if (skipped := self._lost_log.due()) is not None:
                log.error("ledger record lost: spool append failed: %s (%d more since the "
                          "last such line; trioproxy_ledger_lost_records_total counts them)",
                          exc, skipped)  # fmt: skip
            return
        self.overflowed += 1
        self._overflow_seqs.append(seq)
        self.unsynced = self.dirty = True

    async def spool_entries(self, batch: list[Entry]) -> None:
        overflowed = self._overflow_seqs
        self._overflow_seqs = []
        self.unsynced = False  # this fsync covers the overflow appends made so far
        await trio.to_thread.run_sync(self.spool_now, batch)
        release(self.journal, (seq for seq, _ in batch))
        release(self.journal, overflowed)

    def spool_now(self, batch: list[Entry]) -> None:
        """Blocking (a thread, or the last synchronous flush); fsyncs the spool."""
        self.spool.append((r for _, r in batch), fsync=True)
        self.spooled += len(batch)
        self.dirty = True

    async def sync(self) -> None:
        """fsync the overflow appends; their journal entries may go."""
        overflowed = self._overflow_seqs
        self._overflow_seqs = []
        self.unsynced = False
        await trio.to_thread.run_sync(self.spool.sync)
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


__all__ = ["Entry", "Spooler", "release"]
