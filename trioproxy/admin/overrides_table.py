"""The durable copy of the budget overrides an admin set (team limits, alert thresholds, token
windows, key rates): a Redis budget state that is lost takes its own copy with it, and its
rebuild (:mod:`trioproxy.budget.recovery`) writes these back. One row per override name
(:mod:`trioproxy.budget.overrides`), the last value set."""

from __future__ import annotations

import time
from collections.abc import Collection

from trioproxy.admin.db import AdminDb, Sql, StoreError
from trioproxy.budget.overrides import merged_value

SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_overrides(
  name TEXT PRIMARY KEY, value TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL);
"""
_UPSERT = (
    "INSERT INTO budget_overrides(name, value, ts) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, ts = excluded.ts"
)


_INSERT_NEW = (
    "INSERT INTO budget_overrides(name, value, ts) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"
)
_SWAP = "UPDATE budget_overrides SET value = ?, ts = ? WHERE name = ? AND value = ?"
MERGE_ATTEMPTS = 16
"""A merge reads the saved value, then writes it back only if it is still the one read (on
both engines, without a lock); another save in between makes it read again."""


class OverridesTable(AdminDb):
    async def save_override(
        self, name: str, value: str, *, fields: Collection[str] | None = None
    ) -> None:
        """Save ``value``; with ``fields``, only those keys of it over the saved JSON object
        (:func:`~trioproxy.budget.overrides.merged_value`), so two edits of different fields
        both stay whichever is saved first."""
        now = time.time()

        def op(db: Sql) -> None:
            if fields is None:
                db.execute(_UPSERT, (name, value, now))
                return
            for _ in range(MERGE_ATTEMPTS):
                row = db.execute(
                    "SELECT value FROM budget_overrides WHERE name = ?", (name,)
                ).fetchone()
                if row is None:
                    done = db.execute(_INSERT_NEW, (name, value, now)).rowcount
                else:
                    merged = merged_value(row[0], value, fields)
                    done = db.execute(_SWAP, (merged, now, name, row[0])).rowcount
                if done == 1:
                    return
            raise StoreError(f"admin store: override {name!r} changed by every attempt to save it")

        await self._run(op)

    async def overrides(self) -> dict[str, str]:
        """Every override, name → value (JSON)."""

        def op(db: Sql) -> dict[str, str]:
            return {n: v for n, v in db.execute("SELECT name, value FROM budget_overrides")}

        return await self._run(op)


__all__ = ["SCHEMA", "OverridesTable"]
