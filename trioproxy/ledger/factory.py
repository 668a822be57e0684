"""Open the configured ledger backend and writer from ``settings.storage``."""

from __future__ import annotations

from pathlib import Path

from trioproxy.ledger.backend import LedgerBackend
from trioproxy.ledger.journal import Journal
from trioproxy.ledger.spool import Spool
from trioproxy.ledger.writer import FSYNC_INTERVAL, LedgerWriter

SQLITE_NAME = "ledger.sqlite3"


async def open_backend(
    *, state_dir: str | Path, database_url: str | None = None, zone: str | None = None
) -> LedgerBackend:
    """PostgreSQL when ``database_url`` is set, else SQLite at ``state_dir/ledger.sqlite3``.
    ``zone``: the time zone of the day roll-up (the gateway's ``budgets.timezone``; None
    keeps the stored one, for readers)."""
    if database_url:
        from trioproxy.ledger.postgres import PostgresLedger

        return await PostgresLedger.open(database_url, zone=zone)
    from trioproxy.ledger.sqlite import SqliteLedger

    return await SqliteLedger.open(Path(state_dir) / SQLITE_NAME, zone=zone)


async def open_writer(
    *,
    state_dir: str | Path,
    database_url: str | None = None,
    retention_days: int | None = None,
    fsync_interval: float = FSYNC_INTERVAL,
    journal: Journal | None = None,
    zone: str | None = None,
) -> LedgerWriter:
    """The app's writer, journaling under ``state_dir`` (in ``journal`` if given: the caller
    keeps it across writers): start ``writer.run`` with ``nursery.start``; ``aclose`` at
    shutdown, then ``await writer.backend.aclose()``."""
    backend = await open_backend(state_dir=state_dir, database_url=database_url, zone=zone)
    return LedgerWriter(
        backend, Spool(state_dir), retention_days=retention_days,
        journal=journal or Journal(state_dir), owns_journal=journal is None,
        fsync_interval=fsync_interval,
    )  # fmt: skip


__all__ = ["SQLITE_NAME", "open_backend", "open_writer"]
