"""Who may sign in to the dashboard: users created there, their sessions, failed sign-ins,
the browsers that signed in as them (device cookies: :mod:`.throttle`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from trioproxy.admin.db import AdminDb, Sql, teams_in, teams_out
from trioproxy.admin.sessions import Principal, Role, Session
from trioproxy.admin.throttle import Seen

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(
  id_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL, role TEXT NOT NULL, teams TEXT,
  via TEXT NOT NULL, csrf TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
  last_seen DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_created ON sessions(created);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions("user");
CREATE TABLE IF NOT EXISTS login_failures(subject TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_subject ON login_failures(subject, ts);
CREATE INDEX IF NOT EXISTS login_failures_ts ON login_failures(ts);
CREATE TABLE IF NOT EXISTS login_devices(
  id_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS login_devices_user ON login_devices("user");
CREATE INDEX IF NOT EXISTS login_devices_created ON login_devices(created);
CREATE TABLE IF NOT EXISTS users(
  name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, teams TEXT,
  created DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0);
"""
MIGRATIONS = ("ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",)
"""For SQLite files made before the column (the CREATE above has it)."""


@dataclass(frozen=True, slots=True)
class StoredUser:
    name: str
    password_hash: str
    role: Role
    teams: frozenset[str] | None
    created: float
    created_by: str
    disabled: bool = False
    """A disabled user cannot sign in (their sessions were revoked when disabled)."""


_USER_COLS = "name, password_hash, role, teams, created, created_by, disabled"
_INSERT_USER = f"INSERT INTO users ({_USER_COLS}) VALUES (?,?,?,?,?,?,?)"


_PUT_USER = f"{_INSERT_USER} ON CONFLICT (name) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _USER_COLS.split(", ")[1:]
)
_MANAGER = "role = 'admin' AND teams IS NULL AND disabled = 0"
"""A stored user who manages users: an enabled admin of every team."""


class _NoManagerLeft(Exception):
    """Rolls back a change that would leave no stored admin of every team."""


class _Gone(Exception):
    """Rolls back a change to a user deleted meanwhile."""


EDITABLE = ("role", "teams", "disabled")
"""The columns :meth:`AccountsTable.update_user` may write."""


def _user_of(row: Sequence[Any]) -> StoredUser:
    n, h, r, t, c, b, disabled = row
    return StoredUser(n, h, cast(Role, r), teams_in(t), c, b, bool(disabled))


def _user_row(u: StoredUser) -> tuple[object, ...]:
    return (u.name, u.password_hash, u.role, teams_out(u.teams), u.created, u.created_by,
            int(u.disabled))  # fmt: skip


class AccountsTable(AdminDb):
    # --- sessions -------------------------------------------------------------------

    async def create_session(self, s: Session, *, purge_before: float) -> None:
        """Store a new session; drop sessions that ended before ``purge_before``."""
        p = s.principal

        def op(db: Sql) -> None:
            with db.transaction():
                db.execute("DELETE FROM sessions WHERE created < ?", (purge_before,))
                db.execute(
                    "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)",
                    (s.id_hash, p.name, p.role, teams_out(p.teams),
                     f"{p.via}:{p.credential}" if p.credential else p.via, s.csrf,
                     s.created, s.last_seen),
                )  # fmt: skip

        await self._run(op)

    async def get_session(self, id_hash: str) -> Session | None:
        def op(db: Sql) -> Session | None:
            row = db.execute(
                'SELECT "user", role, teams, via, csrf, created, last_seen FROM sessions '
                "WHERE id_hash = ?",
                (id_hash,),
            ).fetchone()
            if row is None:
                return None
            user, role, teams, stored_via, csrf, created, last_seen = row
            via, _, credential = stored_via.partition(":")  # "api-key:<digest of the key>"
            principal = Principal(user, role, teams_in(teams), via, credential)
            return Session(id_hash, principal, csrf, created, last_seen)

        return await self._run(op)

    async def touch_session(self, id_hash: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash)
            )
        )

    async def revoke_session(self, id_hash: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,)))

    async def revoke_user(self, user: str) -> int:
        def op(db: Sql) -> int:
            return int(db.execute('DELETE FROM sessions WHERE "user" = ?', (user,)).rowcount)

        return await self._run(op)

    # --- sign-in failures -------------------------------------------------------------

    async def failures(self, subjects: Sequence[str], since: float) -> dict[str, Seen]:
        """Per subject with failures since ``since``: their count, oldest and newest time."""

        def op(db: Sql) -> dict[str, Seen]:
            out: dict[str, Seen] = {}
            for subject in subjects:
                n, oldest, newest = db.execute(
                    "SELECT COUNT(*), MIN(ts), MAX(ts) FROM login_failures "
                    "WHERE subject = ? AND ts >= ?",
                    (subject, since),
                ).fetchone()
                if n:
                    out[subject] = Seen(int(n), float(oldest), float(newest))
            return out

        return await self._run(op)

    async def record_failure(
        self, subjects: Sequence[str], now: float, *, keep_after: float
    ) -> None:
        def op(db: Sql) -> None:
            with db.transaction():
                db.execute("DELETE FROM login_failures WHERE ts < ?", (keep_after,))
                db.executemany(
                    "INSERT INTO login_failures VALUES (?, ?)", [(s, now) for s in subjects]
                )

        await self._run(op)

    async def clear_failures(self, subject: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM login_failures WHERE subject = ?", (subject,))
        )

    # --- devices (browsers that signed in as a user) -------------------------------------

    async def add_device(
        self, id_hash: str, user: str, now: float, *, replaces: str | None, purge_before: float
    ) -> None:
        """Remember a device cookie's hash for ``user`` (the one it ``replaces`` goes);
        drop devices made before ``purge_before``."""

        def op(db: Sql) -> None:
            with db.transaction():
                db.execute("DELETE FROM login_devices WHERE created < ?", (purge_before,))
                if replaces is not None:
                    db.execute("DELETE FROM login_devices WHERE id_hash = ?", (replaces,))
                db.execute("INSERT INTO login_devices VALUES (?,?,?) ON CONFLICT DO NOTHING",
                           (id_hash, user, now))  # fmt: skip

        await self._run(op)

    async def device_user(self, id_hash: str, since: float) -> str | None:
        """The user a device cookie (by its hash) signed in as, if made since ``since``."""

        def op(db: Sql) -> str | None:
            row = db.execute(
                'SELECT "user" FROM login_devices WHERE id_hash = ? AND created >= ?',
                (id_hash, since),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(op)

    # --- users ----------------------------------------------------------------------

    async def users(self) -> list[StoredUser]:
        def op(db: Sql) -> list[StoredUser]:
            rows = db.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name").fetchall()
            return [_user_of(row) for row in rows]

        return await self._run(op)

    async def user(self, name: str) -> StoredUser | None:
        def op(db: Sql) -> StoredUser | None:
            row = db.execute(f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,)).fetchone()
            return None if row is None else _user_of(row)

        return await self._run(op)

    async def put_user(self, u: StoredUser) -> None:
        row = _user_row(u)
        await self._run(lambda db: db.execute(_PUT_USER, row))

    async def update_user(
        self, u: StoredUser, *, keep_manager: bool, columns: Sequence[str] = EDITABLE
    ) -> bool | None:
        """Write ``columns`` (of :data:`EDITABLE`) of ``u`` to the user's row and nothing
        else: a password set or another column changed since ``u`` was read stays. With
        ``keep_manager``: only if an enabled admin of every team is left among the stored
        users (False, nothing written, otherwise); None (nothing written) if the user is
        gone. One transaction whose first statement locks every such admin's row
        (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` takes the write lock), so two admins
        demoting each other at once cannot both succeed."""
        values = {"role": u.role, "teams": teams_out(u.teams), "disabled": int(u.disabled)}
        sets = ", ".join(f"{c} = ?" for c in columns)
        params = (*(values[c] for c in columns), u.name)

        def op(db: Sql) -> bool | None:
            try:
                with db.transaction():
                    db.execute(f"UPDATE users SET role = role WHERE {_MANAGER}")
                    if db.execute(f"UPDATE users SET {sets} WHERE name = ?", params).rowcount != 1:
                        raise _Gone
                    if keep_manager:
                        (left,) = db.execute(
                            f"SELECT COUNT(*) FROM users WHERE {_MANAGER}"
                        ).fetchone()
                        if not left:
                            raise _NoManagerLeft
            except _NoManagerLeft:
                return False
            except _Gone:
                return None
            return True

        return await self._run(op)

    async def set_password(self, name: str, password_hash: str) -> bool:
        """A user's new password (its hash) and nothing else; False if the user is gone."""

        def op(db: Sql) -> bool:
            cur = db.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                             (password_hash, name))  # fmt: skip
            return bool(cur.rowcount == 1)

        return await self._run(op)

    async def add_user(self, u: StoredUser) -> bool:
        """Store a new user; False if the name is taken. Sessions and devices of that name
        (a config user's since removed) end in the same transaction: the name is a new
        account now."""

        def op(db: Sql) -> bool:
            with db.transaction():
                cur = db.execute(f"{_INSERT_USER} ON CONFLICT DO NOTHING", _user_row(u))
                if cur.rowcount != 1:
                    return False
                db.execute('DELETE FROM sessions WHERE "user" = ?', (u.name,))
                db.execute('DELETE FROM login_devices WHERE "user" = ?', (u.name,))
                return True

        return await self._run(op)

    async def delete_user(self, name: str) -> bool:
        """Delete a user and, in the same transaction, its sessions and devices."""

        def op(db: Sql) -> bool:
            with db.transaction():
                db.execute('DELETE FROM sessions WHERE "user" = ?', (name,))
                db.execute('DELETE FROM login_devices WHERE "user" = ?', (name,))
                return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

        return await self._run(op)


__all__ = ["EDITABLE", "MIGRATIONS", "SCHEMA", "AccountsTable", "StoredUser"]
