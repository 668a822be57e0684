"""The durable ledger as the app's usage sink and one of its lifetime services."""

from __future__ import annotations

import trio

from trioproxy.config.model import StorageConfig
from trioproxy.ledger.factory import open_writer
from trioproxy.ledger.record import UsageRecord
from trioproxy.ledger.writer import LedgerWriter

CLOSE_TIMEOUT_S = 15.0


class LedgerService:
    """Opens the writer at start-up, hands it every record, flushes it at shutdown.

    Requests are only served after start-up completes, so ``submit`` always has
    a writer; a record arriving after shutdown goes to the writer's spool.
    """

    def __init__(self, storage: StorageConfig) -> None:
        self._storage = storage
        self.writer: LedgerWriter | None = None

    def submit(self, record: UsageRecord) -> None:
        if self.writer is None:
            raise RuntimeError("ledger used before start-up")
        self.writer.submit(record)

    def intend(self, record: UsageRecord) -> int:
        return self.writer.intend(record) if self.writer is not None else -1

    def resolve(self, token: int) -> None:
        if self.writer is not None:
            self.writer.resolve(token)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        db = self._storage.database_url
        writer = await open_writer(
            state_dir=self._storage.state_dir,
            database_url=db.reveal() if db is not None else None,
            retention_days=self._storage.ledger_retention_days,
            fsync_interval=self._storage.ledger_fsync_interval_s,
        )
        self.writer = writer
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await writer.aclose()
                await writer.backend.aclose()


__all__ = ["LedgerService"]
