"""What happened, as the dashboard lists it: the audit log of changes, fired budget alerts
with their webhook deliveries, and the workers' heartbeats (is the data fresh)."""

from __future__ import annotations

from dataclasses import dataclass

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.db import AdminDb, Sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit(
  seq {serial}, ts DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts(
  id {serial}, ts DOUBLE PRECISION NOT NULL, team TEXT NOT NULL,
  budget TEXT NOT NULL, level TEXT NOT NULL, threshold DOUBLE PRECISION NOT NULL,
  spent_micros BIGINT NOT NULL, limit_micros BIGINT NOT NULL, delivery TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, done_at DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS alerts_team ON alerts(team, id);
CREATE TABLE IF NOT EXISTS heartbeats(
  worker TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, ready INTEGER NOT NULL,
  detail TEXT NOT NULL);
"""
ALERTS_KEPT = 100_000
"""The alert log keeps this many newest entries."""


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


@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker: str
    """``host:pid`` of a gateway worker process."""
    ts: float
    ready: bool
    detail: str
    """Why it is not ready (its down services), else empty."""


def _newest_first(
    sql: str, key: str, before: int | None, limit: int, where: list[tuple[str, object]]
) -> tuple[str, list[object]]:
    """``sql`` + ``WHERE key < before`` and the extra conditions, newest first, ``limit``."""
    params: list[object] = [before if before is not None else 2**62]
    sql += f" WHERE {key} < ?"
    for cond, value in where:
        sql += f" AND {cond}"
        params.extend(value if isinstance(value, list) else [value])
    return sql + f" ORDER BY {key} DESC LIMIT ?", [*params, limit]


class HistoryTable(AdminDb):
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
        where: list[tuple[str, object]] = []
        if action:
            escaped = (
                action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )  # a prefix: LIKE's wildcards in it are plain characters
            where.append(("action LIKE ? ESCAPE '\\'", escaped))
        sql, params = _newest_first(
            "SELECT ts, actor, action, target, old, new, seq FROM audit", "seq", before_seq,
            limit, where,
        )  # fmt: skip
        return await self._run(
            lambda db: [AuditEntry(*row) for row in db.execute(sql, params).fetchall()]
        )

    # --- budget alerts and webhook deliveries ----------------------------------------

    async def record_alert(
        self, ts: float, team: str, budget: str, level: str, threshold: float,
        spent_micros: int, limit_micros: int, delivery: str,
    ) -> int:  # fmt: skip
        def op(db: Sql) -> int:
            with db.transaction():
                (ref,) = db.execute(
                    "INSERT INTO alerts(ts, team, budget, level, threshold, spent_micros, "
                    "limit_micros, delivery) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                    (ts, team, budget, level, threshold, spent_micros, limit_micros, delivery),
                ).fetchone()
                db.execute("DELETE FROM alerts WHERE id <= ?", (ref - ALERTS_KEPT,))
            return int(ref)

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
        """Newest first; ``before_id`` pages back; ``teams`` limits what is visible (none
        for a principal of no team: PostgreSQL refuses ``IN ()`` as a syntax error)."""
        if teams is not None and not teams:
            return []
        where: list[tuple[str, object]] = []
        if team is not None:
            where.append(("team = ?", team))
        if teams is not None:
            where.append((f"team IN ({','.join('?' * len(teams))})", sorted(teams)))
        sql, params = _newest_first(
            f"SELECT {_ALERT_COLS} FROM alerts", "id", before_id, limit, where
        )
        return await self._run(
            lambda db: [AlertRecord(*row) for row in db.execute(sql, params).fetchall()]
        )

    # --- worker heartbeats --------------------------------------------------------------

    async def beat(self, hb: Heartbeat, *, forget_before: float) -> None:
        """Record a worker's heartbeat; forget workers silent since ``forget_before``."""

        def op(db: Sql) -> None:
            with db.transaction():
                db.execute("DELETE FROM heartbeats WHERE ts < ?", (forget_before,))
                db.execute(
                    "INSERT INTO heartbeats VALUES (?,?,?,?) ON CONFLICT (worker) DO UPDATE "
                    "SET ts = excluded.ts, ready = excluded.ready, detail = excluded.detail",
                    (hb.worker, hb.ts, int(hb.ready), hb.detail),
                )

        await self._run(op)

    async def heartbeats(self) -> list[Heartbeat]:
        def op(db: Sql) -> list[Heartbeat]:
            rows = db.execute("SELECT worker, ts, ready, detail FROM heartbeats ORDER BY worker")
            return [Heartbeat(w, ts, bool(r), d) for w, ts, r, d in rows]

        return await self._run(op)

    async def forget_worker(self, worker: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM heartbeats WHERE worker = ?", (worker,)))


__all__ = ["ALERTS_KEPT", "SCHEMA", "AlertRecord", "Heartbeat", "HistoryTable"]
