"""The admin store's one write transaction (its connection is in autocommit mode, where
``with conn:`` opens none: a DELETE then INSERT pair was not atomic)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.db import transaction
from trioproxy.admin.store import AdminStore


def test_a_failing_step_rolls_the_whole_transaction_back(tmp_path: Path) -> None:
    store = AdminStore.open_sync(tmp_path)
    db = store._conn
    try:
        db.execute("INSERT INTO heartbeats VALUES ('w1', 1.0, 1, '')")
        with pytest.raises(sqlite3.IntegrityError), transaction(db):
            db.execute("DELETE FROM heartbeats")
            db.execute("INSERT INTO heartbeats VALUES ('w2', 2.0, NULL, '')")  # NOT NULL
        assert db.execute("SELECT worker FROM heartbeats").fetchall() == [("w1",)]
        with transaction(db):
            db.execute("DELETE FROM heartbeats")
        assert db.execute("SELECT count(*) FROM heartbeats").fetchone() == (0,)
        assert not db.in_transaction
    finally:
        store.close()


async def test_the_audit_filter_is_a_plain_prefix(tmp_path: Path) -> None:
    store = AdminStore.open_sync(tmp_path)
    try:
        for action in ("keyXrotate", "key_rotate", "key%"):
            await store.audit(AuditEntry(1.0, "admin", action, "t", "", ""))
        assert [e.action for e in await store.audit_log(action="key_")] == ["key_rotate"]
        assert [e.action for e in await store.audit_log(action="key%")] == ["key%"]
        assert len(await store.audit_log(action="key")) == 3
    finally:
        store.close()
