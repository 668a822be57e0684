"""PostgreSQL's list of provisional rows (``ledger_provisional``, :mod:`trioproxy.ledger.
provisional`) stays small and is looked up by index: entries older than
:data:`~trioproxy.ledger.provisional.KEEP_DAYS` are trimmed even with retention off, and a
batch finds the entries of its own requests through the primary key."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from tests.test_ledger_made_up import a_request
from trioproxy.ledger import postgres_schema as schema
from trioproxy.ledger import provisional
from trioproxy.ledger.columns import to_row
from trioproxy.ledger.postgres import PostgresLedger

DAY = 86_400.0


def _listed(pg_url: str) -> list[str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT DISTINCT request_id FROM ledger_provisional").fetchall()
    return sorted(str(r[0]) for r in rows)


async def test_the_list_of_made_up_rows_is_trimmed_without_retention(pg_url: str) -> None:
    """Retention off (the default): the entries of made-up rows older than KEEP_DAYS go (a
    real row that late cannot come), the recent ones stay (they grew forever)."""
    now = time.time()
    _, old = a_request("old", now - 30 * DAY, served=True)  # past any bound
    _, recent = a_request("recent", now - 120, served=True)
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    try:
        await ledger.write_batch([*old, *recent])
        assert _listed(pg_url) == ["old", "recent"]
        await ledger.enforce_retention(now=now, retention_days=None)
        assert _listed(pg_url) == ["recent"]
        real, _ = a_request("recent", now - 120, served=True)
        assert await ledger.write_batch(real) == 3  # still replaces its made-up rows
    finally:
        await ledger.aclose()
    assert _listed(pg_url) == []


def _plan(conn: psycopg.Connection[Any], sql: str, params: tuple[object, ...]) -> str:
    (row,) = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone() or ((),)
    return json.dumps(row)


async def test_a_batch_looks_its_requests_up_in_the_list_by_index(pg_url: str) -> None:
    """With a long list (many crashes' rows), the look-up of a batch's made-up rows probes
    the primary key for the batch's requests: it hash-joined the staged batch with the whole
    list (35 ms a batch at 100,000 entries, 200 ms at 1,000,000)."""
    t0 = time.time() - 120
    real, _ = a_request("r-1", t0, served=True)
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    try:
        await ledger.write_batch(a_request("warm", t0, served=True)[0])

        def plan(conn: psycopg.Connection[Any]) -> str:
            conn.execute(
                "INSERT INTO ledger_provisional SELECT 'x' || g, 'attempt', 0, 'm', now() "
                "FROM generate_series(1, 50000) g"
            )
            conn.execute("ANALYZE ledger_provisional")
            with conn.transaction():
                with conn.cursor().copy(schema.COPY_SQL) as copy:
                    for r in real:
                        copy.write_row(to_row(r))
                return _plan(conn, provisional.REGISTRY_LOOKUP, (provisional.real_ids(real),))

        got = await ledger._read(plan)
    finally:
        await ledger.aclose()
    assert "ledger_provisional_pkey" in got
    assert "Seq Scan" not in got


class _Counting:
    """A pooled connection that counts the statements run through ``execute``."""

    def __init__(self, conn: psycopg.Connection[Any], seen: list[str]) -> None:
        self._conn, self._seen = conn, seen

    def execute(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        self._seen.append(str(sql))
        return self._conn.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_batch_replacing_many_made_up_rows_takes_a_few_statements(
    pg_url: str, monkeypatch: Any
) -> None:
    """A batch whose real rows replace 300 made-up rows deletes them (and their entries in
    the list) in one statement: it took two round trips per row (0.6 s for 500 rows on
    localhost; past the write bound at a 10 ms round trip). The ledger ends as if the made-up
    rows had never been stored."""
    t0 = time.time() - 120
    pairs = [a_request(f"r-{i}", t0 + i / 100, served=True) for i in range(100)]
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    seen: list[str] = []
    try:
        await ledger.write_batch([g for _, ghost in pairs for g in ghost])
        pool = ledger._pool
        plain = pool.connection

        @contextlib.contextmanager
        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with plain(*args, **kwargs) as conn:
                yield _Counting(conn, seen)

        monkeypatch.setattr(pool, "connection", counted)
        assert await ledger.write_batch([r for real, _ in pairs for r in real]) == 300
        monkeypatch.undo()
        raw = await ledger._read(
            lambda c: c.execute(
                "SELECT count(*), count(*) FILTER (WHERE outcome = 'interrupted') FROM ledger_raw"
            ).fetchone()
        )
    finally:
        await ledger.aclose()
    assert raw == (300, 0)
    assert _listed(pg_url) == []
    assert len(seen) <= 6, seen


async def test_a_ledger_made_before_the_list_has_its_recent_days_listed_later(
    pg_url: str,
) -> None:
    """A ledger made before ``ledger_provisional``: its first open lists nothing (it scanned
    the whole raw table under the DDL lock, every batch waiting: 2.1 s per 1,000,000 rows);
    the retention rounds list the made-up rows of the last KEEP_DAYS days, a day at a time,
    and no older ones. A real row replayed then replaces its made-up rows."""
    now = time.time()
    recent_real, recent = a_request("recent", now - 2 * DAY, served=True)
    _, old = a_request("old", now - 30 * DAY, served=True)
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    try:
        await ledger.write_batch([*recent, *old])
    finally:
        await ledger.aclose()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE ledger_provisional")
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    try:
        await ledger.write_batch(a_request("later", now - 60, served=True)[0])
        assert _listed(pg_url) == []  # the open and the first batch scanned nothing
        rounds = 1
        while (await ledger.enforce_retention(now=now, retention_days=None))[1]:
            rounds += 1
        assert 7 <= rounds <= 12  # a day each
        assert _listed(pg_url) == ["recent"]
        assert not (await ledger.enforce_retention(now=now, retention_days=None))[1]
        assert await ledger.write_batch(recent_real) == 3
        left = await ledger._read(
            lambda c: c.execute(
                "SELECT request_id FROM ledger_raw WHERE outcome = 'interrupted'"
            ).fetchall()
        )
    finally:
        await ledger.aclose()
    assert {r[0] for r in left} == {"old"}


async def test_a_batch_reads_committed_rows_whatever_the_database_default(pg_url: str) -> None:
    """A database (or role) whose default isolation is REPEATABLE READ: the ledger's batches
    still run READ COMMITTED, which their lock scheme needs (a batch's snapshot taken before
    it waited for the lock would miss the rows its holder committed)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone() or ("",)
        conn.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_isolation = "repeatable read"'
        )
        conn.execute("CREATE TABLE seen (level text)")
        conn.execute(
            "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO seen VALUES (current_setting('transaction_isolation')); "
            "RETURN NULL; END $$"
        )
    t0 = time.time() - 120
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    try:
        await ledger.write_batch(a_request("warm", t0, served=True)[0])  # the schema made
        await ledger._read(
            lambda c: c.execute(
                "CREATE TRIGGER note BEFORE INSERT ON ledger_daily "
                "FOR EACH STATEMENT EXECUTE FUNCTION note()"
            )
        )
        await ledger.write_batch(a_request("r-1", t0, served=True)[0])
        default = await ledger._read(
            lambda c: c.execute("SHOW default_transaction_isolation").fetchone()
        )
    finally:
        await ledger.aclose()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        seen = conn.execute("SELECT level FROM seen").fetchall()
    assert default == ("repeatable read",)
    assert seen == [("read committed",)]
