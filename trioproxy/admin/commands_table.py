"""Cache commands from the control plane to every data-plane worker: flush a team's scope on
a route, delete one entry. The dashboard runs in its own process; a worker's exact cache
(an in-process LRU without Redis) and its semantic index live in that worker, so the
dashboard writes the command here and every worker applies it
(:mod:`trioproxy.server.cache_commands`). Rows older than :data:`KEPT_S` are dropped."""

from __future__ import annotations

from dataclasses import dataclass

from trioproxy.admin.db import AdminDb, Sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_commands(
  seq {serial}, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, team TEXT NOT NULL,
  route TEXT NOT NULL, entry TEXT NOT NULL);
"""
KEPT_S = 3600.0
"""A command older than this is dropped when the next one is written (every worker has
applied it long before)."""


@dataclass(frozen=True, slots=True)
class CacheCommand:
    seq: int
    ts: float
    kind: str
    """``flush`` (``team``, ``route``) or ``delete`` (``entry``)."""
    team: str
    route: str
    entry: str


class CommandsTable(AdminDb):
    async def post_cache_command(
        self, ts: float, kind: str, *, team: str = "", route: str = "", entry: str = ""
    ) -> int:
        def op(db: Sql) -> int:
            with db.transaction():
                db.execute("DELETE FROM cache_commands WHERE ts < ?", (ts - KEPT_S,))
                (seq,) = db.execute(
                    "INSERT INTO cache_commands(ts, kind, team, route, entry) "
                    "VALUES (?,?,?,?,?) RETURNING seq", (ts, kind, team, route, entry),
                ).fetchone()  # fmt: skip
            return int(seq)

        return await self._run(op)

    async def cache_commands_after(self, seq: int, *, limit: int = 100) -> list[CacheCommand]:
        """Commands after ``seq`` (-1: none, only the last one's number as a start)."""

        def op(db: Sql) -> list[CacheCommand]:
            if seq < 0:
                (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM cache_commands").fetchone()
                return [CacheCommand(int(last), 0.0, "start", "", "", "")]
            rows = db.execute(
                "SELECT seq, ts, kind, team, route, entry FROM cache_commands WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (seq, limit),
            )  # fmt: skip
            return [CacheCommand(*row) for row in rows]

        return await self._run(op)


__all__ = ["KEPT_S", "SCHEMA", "CacheCommand", "CommandsTable"]
