"""The admin store's one write transaction (its connection is in autocommit mode, where
``with conn:`` opens none: a DELETE then INSERT pair was not atomic)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
