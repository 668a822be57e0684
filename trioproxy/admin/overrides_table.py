"""The durable copy of the budget overrides an admin set (team limits, alert thresholds, token
windows, key rates): a Redis budget state that is lost takes its own copy with it, and its
rebuild (:mod:`trioproxy.budget.recovery`) writes these back. One row per override name
(:mod:`trioproxy.budget.overrides`), the last value set."""

from __future__ import annotations

import time

from trioproxy.admin.db import AdminDb, Sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_overrides(
  name TEXT PRIMARY KEY, value TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL);
"""
_UPSERT = (
    "INSERT INTO budget_overrides(name, value, ts) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, ts = excluded.ts"
)


class OverridesTable(AdminDb):
    async def save_override(self, name: str, value: str) -> None:
        now = time.time()

        def op(db: Sql) -> None:
            db.execute(_UPSERT, (name, value, now))

        await self._run(op)

    async def overrides(self) -> dict[str, str]:
        """Every override, name → value (JSON)."""

        def op(db: Sql) -> dict[str, str]:
            return {n: v for n, v in db.execute("SELECT name, value FROM budget_overrides")}

        return await self._run(op)


__all__ = ["SCHEMA", "OverridesTable"]
