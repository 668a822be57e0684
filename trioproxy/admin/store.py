"""Shared dashboard state in one SQLite file (``admin.sqlite3`` in ``storage.state_dir``).

Sessions, sign-in failures, the audit log, and users and API keys created in the dashboard. Every
worker process of a host opens the same file (WAL, ``busy_timeout``), so a logout,
a new user or a throttled sign-in holds on every worker at once. Several hosts need a
shared store: not implemented yet (they would each keep their own).

Every call runs in a worker thread behind a ``CapacityLimiter(1)`` and under
``trio.fail_after(CALL_TIMEOUT_S)``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import trio

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.keys import StoredKey
from trioproxy.admin.sessions import Principal, Role, Session
from trioproxy.config.model import ApiKeyConfig

T = TypeVar("T")
FILE_NAME = "admin.sqlite3"
CALL_TIMEOUT_S = 5.0
BUSY_TIMEOUT_MS = 4_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(
  id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL, teams TEXT,
  via TEXT NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures(subject TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_subject ON login_failures(subject, ts);
CREATE TABLE IF NOT EXISTS audit(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys(
  key_hash TEXT PRIMARY KEY, name TEXT NOT NULL, team TEXT NOT NULL, user TEXT NOT NULL,
  feature TEXT NOT NULL, routes TEXT, priority TEXT NOT NULL, rpm INTEGER, tpm INTEGER,
  created REAL NOT NULL, created_by TEXT NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys(name, revoked_at);
CREATE TABLE IF NOT EXISTS alerts(
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, team TEXT NOT NULL,
  budget TEXT NOT NULL, level TEXT NOT NULL, threshold REAL NOT NULL,
  spent_micros INTEGER NOT NULL, limit_micros INTEGER NOT NULL, delivery TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, done_at REAL);
CREATE INDEX IF NOT EXISTS alerts_team ON alerts(team, id);
CREATE TABLE IF NOT EXISTS heartbeats(
  worker TEXT PRIMARY KEY, ts REAL NOT NULL, ready INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(
  name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, teams TEXT,
  created REAL NOT NULL, created_by TEXT NOT NULL);
"""
_MIGRATIONS = ("ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",)
"""Columns added after a release; each runs once (a second worker finds it done)."""


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


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A fired budget alert and its webhook delivery, as the Alerts page lists it."""

    id: int
    ts: float
    team: str
    budget: str
    """The budget bucket (names the period: ``team:<t>:day:2026-12-04``)."""
    level: str
    threshold: float
    spent_micros: int
    limit_micros: int
    delivery: str
    """``pending``, ``delivered``, ``rejected`` (4xx), ``failed`` or ``no webhook``."""
    attempts: int
    last_error: str | None
    done_at: float | None


_ALERT_COLS = (
    "id, ts, team, budget, level, threshold, spent_micros, limit_micros, delivery, attempts, "
    "last_error, done_at"
)
ALERTS_KEPT = 100_000
"""The alert log keeps this many newest entries."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker: str
    """``host:pid`` of a gateway worker process."""
    ts: float
    ready: bool
    detail: str
    """Why it is not ready (its down services), else empty."""


_USER_COLS = "name, password_hash, role, teams, created, created_by, disabled"


def _user_of(row: Sequence[Any]) -> StoredUser:
    n, h, r, t, c, b, disabled = row
    return StoredUser(n, h, cast(Role, r), _teams_in(t), c, b, bool(disabled))


def _user_row(u: StoredUser) -> tuple[object, ...]:
    return (u.name, u.password_hash, u.role, _teams_out(u.teams), u.created, u.created_by,
            int(u.disabled))  # fmt: skip


_KEY_COLS = (
    "key_hash, name, team, user, feature, routes, priority, rpm, tpm, created, created_by, "
    "revoked_at"
)
_KEY_QS = ", ".join("?" * 12)


def _key_row(k: StoredKey) -> tuple[object, ...]:
    return (k.key_hash, k.name, k.team, k.user, k.feature, _teams_out(k.routes), k.priority,
            k.rpm, k.tpm, k.created, k.created_by, k.revoked_at)  # fmt: skip


def _key_of(row: Sequence[Any]) -> StoredKey:
    h, name, team, user, feature, routes, priority, rpm, tpm, created, by, revoked = row
    return StoredKey(h, name, team, user, feature, _teams_in(routes), priority, rpm, tpm,
                     created, by, revoked)  # fmt: skip


def _teams_out(teams: frozenset[str] | None) -> str | None:
    return None if teams is None else json.dumps(sorted(teams))


def _teams_in(raw: str | None) -> frozenset[str] | None:
    return None if raw is None else frozenset(json.loads(raw))


class AdminStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    def open_sync(cls, state_dir: str | Path) -> AdminStore:
        """Open (creating the file and schema); cheap, safe before the event loop runs."""
        path = Path(state_dir) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        for sql in _MIGRATIONS:
            try:
                conn.execute(sql)
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
        return cls(conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with trio.fail_after(CALL_TIMEOUT_S):
            return await trio.to_thread.run_sync(
                fn, self._conn, limiter=self._limiter, abandon_on_cancel=True
            )

    def close(self) -> None:
        self._conn.close()

    # --- sessions -------------------------------------------------------------------

    async def create_session(self, s: Session, *, purge_before: float) -> None:
        """Store a new session; drop sessions that ended before ``purge_before``."""
        p = s.principal

        def op(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM sessions WHERE created < ?", (purge_before,))
                db.execute(
                    "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)",
                    (s.id_hash, p.name, p.role, _teams_out(p.teams), p.via, s.csrf,
                     s.created, s.last_seen),
                )  # fmt: skip

        await self._run(op)

    async def get_session(self, id_hash: str) -> Session | None:
        def op(db: sqlite3.Connection) -> Session | None:
            row = db.execute(
                "SELECT user, role, teams, via, csrf, created, last_seen FROM sessions "
                "WHERE id_hash = ?",
                (id_hash,),
            ).fetchone()
            if row is None:
                return None
            user, role, teams, via, csrf, created, last_seen = row
            principal = Principal(user, role, _teams_in(teams), via)
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
        def op(db: sqlite3.Connection) -> int:
            return int(db.execute("DELETE FROM sessions WHERE user = ?", (user,)).rowcount)

        return await self._run(op)

    # --- sign-in failures -------------------------------------------------------------

    async def failures(self, subjects: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        """Per subject with failures since ``since``: (count, oldest time)."""

        def op(db: sqlite3.Connection) -> dict[str, tuple[int, float]]:
            out: dict[str, tuple[int, float]] = {}
            for subject in subjects:
                n, oldest = db.execute(
                    "SELECT COUNT(*), MIN(ts) FROM login_failures WHERE subject = ? AND ts >= ?",
                    (subject, since),
                ).fetchone()
                if n:
                    out[subject] = (int(n), float(oldest))
            return out

        return await self._run(op)

    async def record_failure(
        self, subjects: Sequence[str], now: float, *, keep_after: float
    ) -> None:
        def op(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM login_failures WHERE ts < ?", (keep_after,))
                db.executemany(
                    "INSERT INTO login_failures VALUES (?, ?)", [(s, now) for s in subjects]
                )

        await self._run(op)

    async def clear_failures(self, subject: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM login_failures WHERE subject = ?", (subject,))
        )

    # --- audit ----------------------------------------------------------------------

    async def audit(self, entry: AuditEntry) -> None:
        e = entry
        await self._run(
            lambda db: db.execute(
                "INSERT INTO audit(ts, actor, action, target, old, new) VALUES (?,?,?,?,?,?)",
                (e.ts, e.actor, e.action, e.target, e.old, e.new),
            )
        )

    async def audit_log(
        self, *, limit: int = 100, before_seq: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """Newest first; ``before_seq`` pages back; ``action`` filters by prefix."""

        def op(db: sqlite3.Connection) -> list[AuditEntry]:
            sql = "SELECT ts, actor, action, target, old, new, seq FROM audit WHERE seq < ?"
            params: list[object] = [before_seq if before_seq is not None else 2**62]
            if action:
                sql += " AND action LIKE ? ESCAPE '\\'"
                params.append(action.replace("\\", "\\\\").replace("%", "\\%") + "%")
            sql += " ORDER BY seq DESC LIMIT ?"
            params.append(limit)
            return [AuditEntry(*row) for row in db.execute(sql, params).fetchall()]

        return await self._run(op)

    # --- API keys created in the dashboard ---------------------------------------------

    async def lookup(self, key_hash: str) -> ApiKeyConfig | None:
        """The active key with this hash (the gateway's key ring asks on every request)."""

        def op(db: sqlite3.Connection) -> StoredKey | None:
            row = db.execute(
                f"SELECT {_KEY_COLS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return None if row is None else _key_of(row)

        found = await self._run(op)
        return None if found is None else found.config()

    async def api_keys(self) -> list[StoredKey]:
        """Every stored key, active first, then newest first."""

        def op(db: sqlite3.Connection) -> list[StoredKey]:
            rows = db.execute(
                f"SELECT {_KEY_COLS} FROM api_keys ORDER BY revoked_at IS NOT NULL, created DESC"
            ).fetchall()
            return [_key_of(r) for r in rows]

        return await self._run(op)

    async def add_key(self, k: StoredKey) -> bool:
        """Store a new key; False if an active key already has its name."""

        def op(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                taken = db.execute(
                    "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (k.name,)
                ).fetchone()
                if not taken:
                    db.execute(
                        f"INSERT INTO api_keys ({_KEY_COLS}) VALUES ({_KEY_QS})", _key_row(k)
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return not taken

        return await self._run(op)

    async def revoke_key(self, name: str, now: float) -> StoredKey | None:
        """Revoke the active key called ``name``; None if there is none."""

        def op(db: sqlite3.Connection) -> StoredKey | None:
            row = db.execute(
                f"UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
                f"RETURNING {_KEY_COLS}",
                (now, name),
            ).fetchone()
            return None if row is None else _key_of(row)

        return await self._run(op)

    async def replace_key(self, old_name: str, new: StoredKey, now: float) -> StoredKey | None:
        """Rotate: revoke the active key ``old_name`` and store ``new`` in one transaction."""

        def op(db: sqlite3.Connection) -> StoredKey | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    f"UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
                    f"RETURNING {_KEY_COLS}",
                    (now, old_name),
                ).fetchone()
                if row is not None:
                    db.execute(
                        f"INSERT INTO api_keys ({_KEY_COLS}) VALUES ({_KEY_QS})", _key_row(new)
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return None if row is None else _key_of(row)

        return await self._run(op)

    # --- budget alerts and webhook deliveries ----------------------------------------

    async def record_alert(
        self, ts: float, team: str, budget: str, level: str, threshold: float,
        spent_micros: int, limit_micros: int, delivery: str,
    ) -> int:  # fmt: skip
        def op(db: sqlite3.Connection) -> int:
            with db:
                cur = db.execute(
                    "INSERT INTO alerts(ts, team, budget, level, threshold, spent_micros, "
                    "limit_micros, delivery) VALUES (?,?,?,?,?,?,?,?)",
                    (ts, team, budget, level, threshold, spent_micros, limit_micros, delivery),
                )
                ref = int(cur.lastrowid or 0)
                db.execute("DELETE FROM alerts WHERE id <= ?", (ref - ALERTS_KEPT,))
                return ref

        return await self._run(op)

    async def alert_delivered(
        self, ref: int, delivery: str, attempts: int, last_error: str | None, at: float
    ) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE alerts SET delivery=?, attempts=?, last_error=?, done_at=? WHERE id=?",
                (delivery, attempts, last_error, at, ref),
            )
        )

    async def alert_log(
        self, *, limit: int = 100, before_id: int | None = None,
        teams: frozenset[str] | None = None, team: str | None = None,
    ) -> list[AlertRecord]:  # fmt: skip
        """Newest first; ``before_id`` pages back; ``teams`` limits what is visible."""

        def op(db: sqlite3.Connection) -> list[AlertRecord]:
            sql = f"SELECT {_ALERT_COLS} FROM alerts WHERE id < ?"
            params: list[object] = [before_id if before_id is not None else 2**62]
            if team is not None:
                sql += " AND team = ?"
                params.append(team)
            if teams is not None:
                sql += f" AND team IN ({','.join('?' * len(teams))})"
                params.extend(sorted(teams))
            sql += " ORDER BY id DESC LIMIT ?"
            params.append(limit)
            return [AlertRecord(*row) for row in db.execute(sql, params).fetchall()]

        return await self._run(op)

    # --- worker heartbeats --------------------------------------------------------------

    async def beat(self, hb: Heartbeat, *, forget_before: float) -> None:
        """Record a worker's heartbeat; forget workers silent since ``forget_before``."""

        def op(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM heartbeats WHERE ts < ?", (forget_before,))
                db.execute(
                    "INSERT OR REPLACE INTO heartbeats VALUES (?,?,?,?)",
                    (hb.worker, hb.ts, int(hb.ready), hb.detail),
                )

        await self._run(op)

    async def heartbeats(self) -> list[Heartbeat]:
        def op(db: sqlite3.Connection) -> list[Heartbeat]:
            rows = db.execute("SELECT worker, ts, ready, detail FROM heartbeats ORDER BY worker")
            return [Heartbeat(w, ts, bool(r), d) for w, ts, r, d in rows]

        return await self._run(op)

    async def forget_worker(self, worker: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM heartbeats WHERE worker = ?", (worker,)))

    # --- users ----------------------------------------------------------------------

    async def users(self) -> list[StoredUser]:
        def op(db: sqlite3.Connection) -> list[StoredUser]:
            rows = db.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name").fetchall()
            return [_user_of(row) for row in rows]

        return await self._run(op)

    async def user(self, name: str) -> StoredUser | None:
        def op(db: sqlite3.Connection) -> StoredUser | None:
            row = db.execute(f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,)).fetchone()
            return None if row is None else _user_of(row)

        return await self._run(op)

    async def put_user(self, u: StoredUser) -> None:
        row = _user_row(u)
        sql = f"INSERT OR REPLACE INTO users ({_USER_COLS}) VALUES (?,?,?,?,?,?,?)"
        await self._run(lambda db: db.execute(sql, row))

    async def add_user(self, u: StoredUser) -> bool:
        """Store a new user; False if the name is taken."""

        def op(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                f"INSERT OR IGNORE INTO users ({_USER_COLS}) VALUES (?,?,?,?,?,?,?)", _user_row(u)
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def delete_user(self, name: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

        return await self._run(op)


__all__ = ["CALL_TIMEOUT_S", "FILE_NAME", "AdminStore", "AlertRecord", "Heartbeat", "StoredUser"]
