"""Shared dashboard state in one SQLite file (``admin.sqlite3`` in ``storage.state_dir``).

One class over one connection (:mod:`trioproxy.admin.db`), its tables by concern:
:mod:`~trioproxy.admin.accounts_table` (users, sessions, failed sign-ins),
:mod:`~trioproxy.admin.keys_table` (API keys created in the dashboard) and
:mod:`~trioproxy.admin.history_table` (audit log, alerts, worker heartbeats). Every worker
process of a host opens the same file, so a logout, a new user or a throttled sign-in holds on
every worker at once. Several hosts need a shared store: not implemented yet (they would each
keep their own).
"""

from __future__ import annotations

from trioproxy.admin import accounts_table, history_table, keys_table
from trioproxy.admin.accounts_table import AccountsTable, StoredUser
from trioproxy.admin.db import CALL_TIMEOUT_S, FILE_NAME
from trioproxy.admin.history_table import AlertRecord, Heartbeat, HistoryTable
from trioproxy.admin.keys_table import KeysTable


class AdminStore(AccountsTable, KeysTable, HistoryTable):
    SCHEMA = accounts_table.SCHEMA + keys_table.SCHEMA + history_table.SCHEMA
    MIGRATIONS = accounts_table.MIGRATIONS


__all__ = ["CALL_TIMEOUT_S", "FILE_NAME", "AdminStore", "AlertRecord", "Heartbeat", "StoredUser"]
