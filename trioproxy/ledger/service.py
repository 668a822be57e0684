"""The durable ledger as the app's usage sink and one of its lifetime services."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import trio

from trioproxy.config.model import StorageConfig
from trioproxy.ledger.factory import open_writer
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.spooler import disk_error
from trioproxy.ledger.writer import LedgerWriter

log = logging.getLogger("trioproxy.ledger")

CLOSE_TIMEOUT_S = 15.0
LOSING_S = 10.0
"""How long a lost record, or a write the state disk refused, keeps ``/readyz`` at 503."""


class LedgerService:
    """Opens the writer at start-up, hands it every record, flushes it at shutdown.

    Requests are only served after start-up completes, so ``submit`` always has
    a writer; a record arriving after shutdown goes to the writer's spool.
    """

    def __init__(self, storage: StorageConfig, *, zone: str | None = None) -> None:
        self._storage = storage
        self._zone = zone
        """The day roll-up's time zone (``budgets.timezone``)."""
        self.writer: LedgerWriter | None = None
        self.on_recovered: Callable[[list[UsageRecord]], None] | None = None
        """Given to the writer (:attr:`LedgerWriter.on_recovered`)."""
        self._journal: Journal | None = None
        """One journal for the process, kept when a crashed writer is restarted: requests in
        flight resolve their intents in it."""

    def submit(self, record: UsageRecord) -> None:
        if self.writer is None:
            raise RuntimeError("ledger used before start-up")
        self.writer.submit(record)

    def submit_all(self, records: Sequence[UsageRecord]) -> None:
        if self.writer is None:
            raise RuntimeError("ledger used before start-up")
        self.writer.submit_all(records)

    def intend(self, record: UsageRecord) -> int:
        return self.writer.intend(record) if self.writer is not None else -1

    def resolve(self, token: int) -> None:
        if self.writer is not None:
            self.writer.resolve(token)

    def losing_records(self, within_s: float = LOSING_S) -> bool:
        """A record was lost, or a journal append failed, in the last ``within_s`` seconds
        (a full or read-only state disk): ``/readyz`` says so."""
        since = time.monotonic() - within_s
        if self._journal is not None and self._journal.failed_at > since:
            return True
        return self.lost_records(within_s)

    def lost_records(self, within_s: float = LOSING_S) -> bool:
        """A record was lost (not only held in memory) in the last ``within_s`` seconds."""
        since = time.monotonic() - within_s
        return self.writer is not None and self.writer.disk.lost_at > since

    def cannot_record(self) -> bool:
        """The writer's memory hold is nearly full (the state disk refuses writes): the data
        plane refuses new requests until records drain (``edge/intake.py``)."""
        return self.writer is not None and self.writer.disk.refusing()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        db = self._storage.database_url
        if self._journal is None:
            self._journal = Journal(self._storage.state_dir)
        writer = await open_writer(
            state_dir=self._storage.state_dir,
            database_url=db.reveal() if db is not None else None,
            retention_days=self._storage.ledger_retention_days,
            fsync_interval=self._storage.ledger_fsync_interval_s,
            journal=self._journal,
            zone=self._zone,
        )
        writer.on_recovered = self.on_recovered
        if self.writer is not None:  # a crashed one: what the disk would not take goes on
            writer.disk.held = self.writer.disk.take_held()  # (no checkpoint until replaced)
        self.writer = writer
        crashed = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                task_status.started()
        except Exception:  # the supervisor restarts us: keep the journal
            crashed = True
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await writer.aclose()
                await writer.backend.aclose()
            if not crashed:  # shutdown: everything is flushed; finished segments go
                try:
                    self._journal.close()
                except OSError as exc:  # what is not finished stays on disk for the next start
                    log.error("ledger journal close failed: %s", disk_error(exc))
                self._journal = None
                writer.abandon_held()


__all__ = ["LedgerService"]
