"""Embedded budget store: one SQLite file in WAL mode, shared by every worker
process on the host.

Operations run in ``BEGIN IMMEDIATE`` transactions (the write lock is taken
before the first read, so check-then-write is atomic across processes),
group-committed: concurrent operations of one process share one transaction
and one worker-thread call (:class:`~trioproxy.budget.group_commit.GroupCommit`; an operation
that fails is undone alone).
The process's single connection is only ever used by one batch's worker thread at a time, and
other processes wait on SQLite's lock for at most ``busy_timeout_s``, after which the
call fails with :class:`StoreUnavailable` rather than hanging. A call cancelled
while its batch runs is abandoned; its transaction still commits or rolls
back as a whole (an abandoned reserve is an unsettled reservation: see the
lease rule in :mod:`trioproxy.budget.store`).

Statements per operation (each ~1.5 µs of Python's sqlite3 in the worker thread): a calendar
period's claim is checked and taken by one upsert that answers the new total (given back when
a later claim has no room); a reservation's holds are one column of its row (settle reads
them with the update that closes it, a period's holds settle in one statement). A request
with a team's day and month claims: reserve 4 statements, settle 3.

``synchronous=NORMAL``: a commit survives a process crash; a power loss may
lose the last transactions (budgets then err towards under-counting only what
was in flight; the ledger remains the billing record).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from trioproxy.budget.claims import Claim, Denial, distribute, merge_claims
from trioproxy.budget.group_commit import GroupCommit
from trioproxy.budget.periods import window_retry_after
from trioproxy.budget.store import (
    NO_OVERRIDES,
    ReservationClosed,
    TeamLimits,
    effective_limit,
    merged_limits,
)
from trioproxy.store.sqlite_file import SCHEMA_WAIT_S, add_column, open_wal, set_busy_timeout

_TAKE_PERIOD = (
    "INSERT INTO buckets(bucket, window_s, total, expires_at) VALUES (?,NULL,?,?) "
    "ON CONFLICT(bucket) DO UPDATE SET total = total + excluded.total RETURNING total"
)
"""A calendar period's claim taken, answering the bucket's new total (checked after)."""

PRUNE_EVERY = 1024
"""Reservations between two clean-ups of dead rows (done inside a reserve)."""
RETENTION_S = 2 * 86400.0
"""Expired period buckets and closed reservations are kept this long, for reports."""

_SLID_OUT = "SELECT bucket, amount FROM wlog WHERE expires <= ?"
"""Window entries past their window, every bucket's (the ``wlog_expires`` index range)."""
_DEAD = "SELECT rid FROM reservations WHERE lease_until < ?"
_GONE = "SELECT bucket FROM buckets WHERE expires_at IS NOT NULL AND expires_at < ?"
_PRUNE_PAST: tuple[tuple[str, float], ...] = (
    ("DELETE FROM wlog WHERE expires <= ?", 0.0),
    # a bucket's entries go with it, also any without ``expires`` (written by a worker of the
    # previous version during an upgrade): none is left to count against its next total
    (f"DELETE FROM wlog WHERE bucket IN ({_GONE})", RETENTION_S),
    (f"DELETE FROM buckets WHERE bucket IN ({_GONE})", RETENTION_S),
    (f"DELETE FROM holds WHERE rid IN ({_DEAD})", RETENTION_S),
    ("DELETE FROM reservations WHERE lease_until < ?", RETENTION_S),
    ("DELETE FROM marks WHERE expires_at < ?", 0.0),
)
"""The prune's deletes, each with how long before ``now`` its rows' horizon lies."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets(
    bucket TEXT PRIMARY KEY, window_s REAL, total INTEGER NOT NULL DEFAULT 0, expires_at REAL);
CREATE INDEX IF NOT EXISTS buckets_expiry ON buckets(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS wlog(
    bucket TEXT NOT NULL, rid TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    amount INTEGER NOT NULL, expires REAL, PRIMARY KEY (bucket, rid, seq));
CREATE INDEX IF NOT EXISTS wlog_ts ON wlog(bucket, ts);
CREATE TABLE IF NOT EXISTS reservations(
    rid TEXT PRIMARY KEY, lease_s REAL NOT NULL, lease_until REAL NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL DEFAULT 0, holds BLOB);
CREATE INDEX IF NOT EXISTS reservations_lease ON reservations(lease_until);
CREATE TABLE IF NOT EXISTS holds(
    rid TEXT NOT NULL, seq INTEGER NOT NULL, bucket TEXT NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (rid, seq));
CREATE TABLE IF NOT EXISTS team_limits(team TEXT PRIMARY KEY, daily INTEGER, monthly INTEGER);
CREATE TABLE IF NOT EXISTS policy(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS marks(key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS marks_expiry ON marks(expires_at);
"""
"""``wlog.expires`` is ``ts`` + the window: when the entry slides out. A windowed bucket's
``expires_at`` is its last take's ``expires``: an idle user's bucket goes with the period
buckets, after :data:`RETENTION_S`."""


def _add_expires_column(db: sqlite3.Connection, now: float) -> None:
    """A file made before ``wlog.expires`` gets the column, filled from each entry's bucket,
    and its index; its windowed buckets (made without an end) end a window after ``now``, so
    the idle ones go after the retention too (once, at open)."""
    add_column(
        db, "wlog", "expires", "REAL",
        ("UPDATE wlog SET expires = ts + "
         "(SELECT b.window_s FROM buckets b WHERE b.bucket = wlog.bucket)", ()),
        ("UPDATE buckets SET expires_at = ? + window_s "
         "WHERE window_s IS NOT NULL AND expires_at IS NULL", (now,)),
    )  # fmt: skip
    db.execute("CREATE INDEX IF NOT EXISTS wlog_expires ON wlog(expires)")


def _add_holds_column(db: sqlite3.Connection) -> None:
    """A file made before ``reservations.holds`` gets the column (its open reservations keep
    their holds in the ``holds`` table, which settle and extend still read: ``_holds_of``)."""
    add_column(db, "reservations", "holds", "BLOB")


class SqliteStore:
    timeouts_are_outages = False
    """A slow answer means the host is busy (lock contention, CPU), not that the store
    is gone: the gate fails that call only, it does not mark the store down."""

    def __init__(self, path: str, *, busy_timeout_s: float = 2.0) -> None:
        self._db = open_wal(path, busy_timeout_s=SCHEMA_WAIT_S)
        self._db.executescript(_SCHEMA)
        _add_holds_column(self._db)
        _add_expires_column(self._db, time.time())
        set_busy_timeout(self._db, busy_timeout_s)
        self._commit = GroupCommit(self._db)
        self._ops = 0

    def close(self) -> None:
        self._db.close()

    # --- inside a transaction -------------------------------------------------

    @staticmethod
    def _used(db: sqlite3.Connection, bucket: str, now: float) -> tuple[int, float | None]:
        row = db.execute("SELECT window_s, total FROM buckets WHERE bucket=?", (bucket,)).fetchone()
        if row is None:
            return 0, None
        window_s, total = row
        if window_s is None:
            return int(total), None
        # ``total`` is the live sum of the window's log: retire what slid out of it
        # (O(entries retired), not O(entries in the window)).
        cutoff = now - window_s
        (expired,) = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM wlog WHERE bucket=? AND ts<=?", (bucket, cutoff)
        ).fetchone()
        if expired:
            db.execute("DELETE FROM wlog WHERE bucket=? AND ts<=?", (bucket, cutoff))
            db.execute("UPDATE buckets SET total = total - ? WHERE bucket=?", (expired, bucket))
        return int(total) - int(expired), float(window_s)

    def _claim(
        self, db: sqlite3.Connection, claims: Sequence[Claim], now: float
    ) -> tuple[Denial | None, list[int]]:
        """Check every claim (in order: the denial names the first without room) and take the
        calendar periods' at once: the upsert answers the bucket's new total, one statement
        for the check and the take. A denial gives back what was taken (the buckets are
        distinct: ``merge_claims``); else the windows' used amounts, in claim order, for
        :meth:`_take_windows` (a window is checked first, retiring what slid out of it)."""
        stored: dict[str, TeamLimits | None] = {}
        """The teams' limits as stored now, in this transaction (read once per team)."""
        taken: list[Claim] = []
        used_in_windows: list[int] = []
        for c in claims:
            limit = c.limit
            if c.limit_ref is not None:
                team = c.limit_ref[0]
                if team not in stored:
                    row = db.execute(
                        "SELECT daily, monthly FROM team_limits WHERE team=?", (team,)
                    ).fetchone()
                    stored[team] = None if row is None else TeamLimits(row[0], row[1])
                limit = effective_limit(c, stored[team])
            if c.window_s is None:
                (total,) = db.execute(_TAKE_PERIOD, (c.bucket, c.amount, c.expires_at)).fetchone()
                if total <= limit:
                    taken.append(c)
                    continue
                taken.append(c)
                used = int(total) - c.amount
                retry = None if c.expires_at is None else max(0.0, c.expires_at - now)
            else:
                used, _ = self._used(db, c.bucket, now)
                if used + c.amount <= limit:
                    used_in_windows.append(used)
                    continue
                rows = db.execute(
                    "SELECT ts, amount FROM wlog WHERE bucket=? AND ts>?",
                    (c.bucket, now - c.window_s),
                ).fetchall()
                retry = window_retry_after(rows, now, c.window_s, limit, c.amount)
            for t in taken:
                db.execute("UPDATE buckets SET total = total - ? WHERE bucket=?",
                           (t.amount, t.bucket))  # fmt: skip
            return Denial(c.bucket, used, limit, c.amount, retry), []
        return None, used_in_windows

    @staticmethod
    def _take_windows(
        db: sqlite3.Connection, rid: str, claims: Sequence[Claim], now: float, seq: int,
        holds: list[list[Any]],
    ) -> None:  # fmt: skip
        """Take the windows' claims (the periods' are taken by :meth:`_claim`) and add every
        claim to ``holds``, reservation ``rid``'s holds, whose count ``seq`` is before."""
        for c in claims:
            seq += 1
            if c.window_s is None:
                holds.append([c.bucket, c.amount, 0])
                continue
            holds.append([c.bucket, c.amount, 1])
            slides_out = now + c.window_s
            db.execute(
                "INSERT INTO buckets(bucket, window_s, total, expires_at) VALUES (?,?,?,?) "
                "ON CONFLICT(bucket) DO UPDATE SET total = total + excluded.total, "
                "expires_at = MAX(COALESCE(expires_at, 0), excluded.expires_at)",
                (c.bucket, c.window_s, c.amount, slides_out),
            )
            db.execute(
                "INSERT INTO wlog(bucket, rid, seq, ts, amount, expires) VALUES (?,?,?,?,?,?)",
                (c.bucket, rid, seq, now, c.amount, slides_out),
            )

    @staticmethod
    def _holds_of(db: sqlite3.Connection, rid: str, text: bytes | str | None) -> list[list[Any]]:
        """Reservation ``rid``'s holds, ``[bucket, amount, windowed]`` in the order taken (the
        n-th has ``seq`` n + 1), from its row's ``holds`` (``text``), or from the ``holds``
        table for a reservation made before that column."""
        if text is not None:
            return orjson.loads(text)  # type: ignore[no-any-return]
        return [
            list(r) for r in db.execute(
                "SELECT h.bucket, h.amount, b.window_s IS NOT NULL FROM holds h "
                "LEFT JOIN buckets b ON b.bucket = h.bucket WHERE h.rid=? ORDER BY h.seq",
                (rid,),
            )
        ]  # fmt: skip

    @staticmethod
    def _prune(db: sqlite3.Connection, now: float) -> None:
        """Retire what slid out of every window and drop the rows past retention. Index
        ranges only, O(rows removed): the tables hold two days of reservations, a window's
        entries and a bucket per user ever seen (end users: unbounded), and a scan of them
        in the batch's transaction held every admission up (~110 ms at 1M reservations,
        ~200 ms at 700k window entries, 4.8 s for a walk of 1M users' buckets)."""
        slid: dict[str, int] = {}
        for bucket, amount in db.execute(_SLID_OUT, (now,)):
            slid[bucket] = slid.get(bucket, 0) + amount
        for bucket, amount in slid.items():  # then deleted by the first of _PRUNE_PAST
            db.execute("UPDATE buckets SET total = total - ? WHERE bucket=?", (amount, bucket))
        for sql, horizon in _PRUNE_PAST:
            db.execute(sql, (now - horizon,))

    # --- the protocol ---------------------------------------------------------

    async def reserve(
        self, rid: str, claims: Sequence[Claim], *, now: float, lease_s: float,
        usage: dict[str, int] | None = None,
    ) -> Denial | None:  # fmt: skip
        merged = merge_claims(claims)
        self._ops += 1
        prune = self._ops % PRUNE_EVERY == 0

        def op(db: sqlite3.Connection) -> Denial | None:
            if usage is not None:
                usage.clear()  # (a batch may run its operations twice: _tx_batch)
            if prune:
                self._prune(db, now)
            denial, used = self._claim(db, merged, now)
            if denial is not None:
                return denial
            holds: list[list[Any]] = []
            self._take_windows(db, rid, merged, now, 0, holds)
            try:
                db.execute(
                    "INSERT INTO reservations(rid, lease_s, lease_until, seq, holds) "
                    "VALUES (?,?,?,?,?)",
                    (rid, lease_s, now + lease_s, len(merged), orjson.dumps(holds)),
                )
            except sqlite3.IntegrityError:  # (what was taken is undone with it: _tx_batch)
                raise ValueError(f"reservation {rid!r} already exists") from None
            if usage is not None:  # in this transaction: no second round trip
                windows = (c for c in merged if c.window_s is not None)
                for c, before in zip(windows, used, strict=True):
                    usage[c.bucket] = before + c.amount
            return None

        return await self._commit.run(op)

    async def extend(self, rid: str, claims: Sequence[Claim], *, now: float) -> Denial | None:
        merged = merge_claims(claims)

        def op(db: sqlite3.Connection) -> Denial | None:
            row = db.execute(
                "SELECT lease_s, lease_until, closed, seq, holds FROM reservations WHERE rid=?",
                (rid,),
            ).fetchone()
            if row is None or row[2] or now > row[1]:
                raise ReservationClosed(rid)
            denial, _ = self._claim(db, merged, now)
            if denial is None:
                holds = self._holds_of(db, rid, row[4])
                self._take_windows(db, rid, merged, now, row[3], holds)
                db.execute(
                    "UPDATE reservations SET lease_until=?, seq=?, holds=? WHERE rid=?",
                    (now + row[0], row[3] + len(merged), orjson.dumps(holds), rid),
                )
            return denial

        return await self._commit.run(op)

    async def settle(
        self, rid: str, actual: Mapping[str, int], *, now: float
    ) -> dict[str, int] | None:
        def op(db: sqlite3.Connection) -> dict[str, int] | None:
            row = db.execute(  # closed once: a second settle finds nothing to update
                "UPDATE reservations SET closed=1 WHERE rid=? AND closed=0 "
                "RETURNING lease_until, holds",
                (rid,),
            ).fetchone()
            if row is None:
                return None
            if now > row[0]:
                return None  # lease expired: final at the reserved amount
            periods: dict[str, int] = {}
            """A period bucket's holds: only their sum matters (one statement a bucket)."""
            windows: dict[str, list[tuple[int, int]]] = {}
            for seq, (bucket, amount, windowed) in enumerate(self._holds_of(db, rid, row[1]), 1):
                if windowed:
                    windows.setdefault(bucket, []).append((seq, amount))
                else:
                    periods[bucket] = periods.get(bucket, 0) + amount
            totals: dict[str, int] = {}
            for bucket, held in periods.items():  # the sum of distribute()'s shares
                total = db.execute(
                    "UPDATE buckets SET total = total + ? WHERE bucket=? RETURNING total",
                    (max(0, actual.get(bucket, 0)) - held, bucket),
                ).fetchone()
                if total is not None:
                    totals[bucket] = total[0]
            for bucket, holds in windows.items():
                shares = distribute(actual.get(bucket, 0), [a for _, a in holds])
                for (seq, held), share in zip(holds, shares, strict=True):
                    # a window entry that already slid out was retired from the total
                    if db.execute(
                        "UPDATE wlog SET amount=? WHERE bucket=? AND rid=? AND seq=?",
                        (share, bucket, rid, seq),
                    ).rowcount:
                        db.execute("UPDATE buckets SET total = total + ? WHERE bucket=?",
                                   (share - held, bucket))  # fmt: skip
            return totals

        return await self._commit.run(op)

    async def held(self, rid: str, *, now: float) -> list[tuple[str, int]] | None:
        def op(db: sqlite3.Connection) -> list[tuple[str, int]] | None:
            row = db.execute(
                "SELECT closed, holds, lease_until FROM reservations WHERE rid=?", (rid,)
            ).fetchone()
            if row is None or row[0] or now > row[2]:
                return None
            return [(b, int(a)) for b, a, _ in self._holds_of(db, rid, row[1])]

        return await self._commit.run(op)

    async def usage(self, bucket: str, *, now: float) -> int:
        return await self._commit.run(lambda db: self._used(db, bucket, now)[0])

    async def get_team_limits(self, team: str) -> TeamLimits | None:
        def op(db: sqlite3.Connection) -> TeamLimits | None:
            row = db.execute(
                "SELECT daily, monthly FROM team_limits WHERE team=?", (team,)
            ).fetchone()
            return None if row is None else TeamLimits(row[0], row[1])

        return await self._commit.run(op)

    async def set_team_limits(
        self, team: str, daily_micros: int | None, monthly_micros: int | None
    ) -> None:
        await self._commit.run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO team_limits(team, daily, monthly) VALUES (?,?,?)",
                (team, daily_micros, monthly_micros),
            )
        )

    async def update_team_limits(
        self, team: str, changes: Mapping[str, int | None]
    ) -> tuple[TeamLimits, TeamLimits]:
        def op(db: sqlite3.Connection) -> tuple[TeamLimits, TeamLimits]:
            row = db.execute(
                "SELECT daily, monthly FROM team_limits WHERE team=?", (team,)
            ).fetchone()
            old = NO_OVERRIDES if row is None else TeamLimits(row[0], row[1])
            new = merged_limits(old, changes)
            if new != old:  # (read and written in one BEGIN IMMEDIATE transaction)
                db.execute(
                    "INSERT OR REPLACE INTO team_limits(team, daily, monthly) VALUES (?,?,?)",
                    (team, new.daily_micros, new.monthly_micros),
                )
            return old, new

        return await self._commit.run(op)

    async def get_policy(self) -> dict[str, str]:
        return await self._commit.run(lambda db: dict(db.execute("SELECT name, value FROM policy")))

    async def set_policy(self, name: str, value: str) -> None:
        await self._commit.run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO policy(name, value) VALUES (?,?)", (name, value)
            )
        )

    async def swap_policy(self, name: str, expected: str | None, value: str) -> str | None:
        def op(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM policy WHERE name=?", (name,)).fetchone()
            held = None if row is None else str(row[0])
            if held == expected:
                db.execute("INSERT OR REPLACE INTO policy(name, value) VALUES (?,?)", (name, value))
            return held

        return await self._commit.run(op)

    async def mark_once(self, key: str, *, now: float, expires_at: float) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM marks WHERE key=? AND expires_at <= ?", (key, now))
            cur = db.execute(
                "INSERT OR IGNORE INTO marks(key, expires_at) VALUES (?,?)", (key, expires_at)
            )
            return cur.rowcount == 1

        return await self._commit.run(op)

    async def prune(self, now: float) -> None:
        await self._commit.run(lambda db: self._prune(db, now))


__all__ = ["SqliteStore"]
