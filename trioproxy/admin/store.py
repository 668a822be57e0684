"""Shared dashboard state: users, sessions, API keys, the audit log, alerts, heartbeats.

One class over one engine (:mod:`trioproxy.admin.db`), its tables by concern:
:mod:`~trioproxy.admin.accounts_table` (users, sessions, failed sign-ins),
:mod:`~trioproxy.admin.keys_table` (API keys created in the dashboard) and
:mod:`~trioproxy.admin.history_table` (audit log, alerts, worker heartbeats) and
:mod:`~trioproxy.admin.overrides_table` (the durable copy of the budget overrides) and
:mod:`~trioproxy.admin.commands_table` (cache commands for every worker), each written
once for both engines. :func:`open_store` picks the engine from ``[storage]``: PostgreSQL when
``database_url`` is set (every instance sharing it sees the same state at once), else
``admin.sqlite3`` in ``state_dir`` (the worker processes of one host).
"""

from __future__ import annotations

from pathlib import Path

from trioproxy.admin import (
    accounts_table,
    commands_table,
    history_table,
    keys_table,
    overrides_table,
)
from trioproxy.admin.accounts_table import AccountsTable, StoredUser
from trioproxy.admin.commands_table import CacheCommand, CommandsTable
from trioproxy.admin.db import CALL_TIMEOUT_S, StoreError
from trioproxy.admin.history_table import AlertRecord, Heartbeat, HistoryTable
from trioproxy.admin.keys_table import KeysTable
from trioproxy.admin.overrides_table import OverridesTable
from trioproxy.admin.sqlite_engine import FILE_NAME, SqliteEngine


class AdminStore(AccountsTable, KeysTable, HistoryTable, OverridesTable, CommandsTable):
    SCHEMA = (
        accounts_table.SCHEMA
        + keys_table.SCHEMA
        + history_table.SCHEMA
        + overrides_table.SCHEMA
        + commands_table.SCHEMA
    )
    MIGRATIONS = accounts_table.MIGRATIONS

    @classmethod
    def open_sync(cls, state_dir: str | Path, database_url: str | None = None) -> AdminStore:
        """Open the store (cheap, safe before the event loop runs): PostgreSQL at
        ``database_url`` when given (its tables are made on first use), else the SQLite file."""
        if database_url:
            from trioproxy.admin.pg_engine import PgEngine

            return cls(PgEngine.open_sync(database_url, cls.SCHEMA))
        return cls(SqliteEngine.open_sync(state_dir, cls.SCHEMA, cls.MIGRATIONS))


__all__ = ["CALL_TIMEOUT_S", "FILE_NAME", "AdminStore", "AlertRecord", "CacheCommand", "Heartbeat",
           "StoreError", "StoredUser"]  # fmt: skip
