"""API keys created in the dashboard: stored hashed, revoked or rotated in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trioproxy.admin.db import AdminDb, Sql, teams_in, teams_out
from trioproxy.admin.keys import StoredKey
from trioproxy.config.model import ApiKeyConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys(
  key_hash TEXT PRIMARY KEY, name TEXT NOT NULL, team TEXT NOT NULL, "user" TEXT NOT NULL,
  feature TEXT NOT NULL, routes TEXT, priority TEXT NOT NULL, rpm BIGINT, tpm BIGINT,
  created DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL, revoked_at DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys(name, revoked_at);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name)
  WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS api_keys_team ON api_keys(team);
"""
"""At most one active key per name, held by the database (two instances creating the same
name at once: one wins)."""

_KEY_COLS = (
    'key_hash, name, team, "user", feature, routes, priority, rpm, tpm, created, created_by, '
    "revoked_at"
)
_INSERT = f"INSERT INTO api_keys ({_KEY_COLS}) VALUES ({', '.join('?' * 12)})"
_REVOKE = (
    "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
    f"RETURNING {_KEY_COLS}"
)


def _key_row(k: StoredKey) -> tuple[object, ...]:
    return (k.key_hash, k.name, k.team, k.user, k.feature, teams_out(k.routes), k.priority,
            k.rpm, k.tpm, k.created, k.created_by, k.revoked_at)  # fmt: skip


def _key_of(row: Sequence[Any]) -> StoredKey:
    h, name, team, user, feature, routes, priority, rpm, tpm, created, by, revoked = row
    return StoredKey(h, name, team, user, feature, teams_in(routes), priority, rpm, tpm,
                     created, by, revoked)  # fmt: skip


class KeysTable(AdminDb):
    async def lookup(self, key_hash: str) -> ApiKeyConfig | None:
        """The active key with this hash (each worker's key ring asks once per
        ``server.key_cache_ttl_s`` per key)."""

        def op(db: Sql) -> StoredKey | None:
            row = db.execute(
                f"SELECT {_KEY_COLS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return None if row is None else _key_of(row)

        found = await self._run(op)
        return None if found is None else found.config()

    async def api_keys(self, *, active_only: bool = False) -> list[StoredKey]:
        """Every stored key, active first, then newest first; or the active ones alone (the
        revoked stay forever: an old dashboard has many more of them)."""
        where = "WHERE revoked_at IS NULL " if active_only else ""

        def op(db: Sql) -> list[StoredKey]:
            rows = db.execute(
                f"SELECT {_KEY_COLS} FROM api_keys {where}"
                "ORDER BY revoked_at IS NOT NULL, created DESC"
            ).fetchall()
            return [_key_of(r) for r in rows]

        return await self._run(op)

    async def key_teams(self) -> list[str]:
        """The teams of every stored key, revoked ones included, once each."""

        def op(db: Sql) -> list[str]:
            return [str(t) for (t,) in db.execute("SELECT DISTINCT team FROM api_keys")]

        return await self._run(op)

    async def add_key(self, k: StoredKey) -> bool:
        """Store a new key; False if an active key already has its name."""

        def op(db: Sql) -> bool:
            return db.execute(f"{_INSERT} ON CONFLICT DO NOTHING", _key_row(k)).rowcount == 1

        return await self._run(op)

    async def revoke_key(self, name: str, now: float) -> StoredKey | None:
        """Revoke the active key called ``name``; None if there is none."""

        def op(db: Sql) -> StoredKey | None:
            row = db.execute(_REVOKE, (now, name)).fetchone()
            return None if row is None else _key_of(row)

        return await self._run(op)

    async def replace_key(self, old_name: str, new: StoredKey, now: float) -> StoredKey | None:
        """Rotate: revoke the active key ``old_name`` and store ``new`` in one transaction."""

        def op(db: Sql) -> StoredKey | None:
            with db.transaction():
                row = db.execute(_REVOKE, (now, old_name)).fetchone()
                if row is not None:
                    db.execute(_INSERT, _key_row(new))
            return None if row is None else _key_of(row)

        return await self._run(op)


__all__ = ["SCHEMA", "KeysTable"]
