"""Concurrent PostgreSQL ledger writers do not deadlock one another: each table's rows are
locked in key order (the batch statement's upserts, the undo of replaced made-up rows), and a
batch rolled back for a deadlock anyway is written again at once (not spooled, the database
not marked down)."""

from __future__ import annotations

import re
import time

import psycopg

from tests.test_ledger_made_up import a_request
from trioproxy.ledger import postgres_schema as schema
from trioproxy.ledger import provisional
from trioproxy.ledger.postgres import PostgresLedger

ROLLUPS = ("ledger_raw", "ledger_provisional", "ledger_hourly", "ledger_days",
           "ledger_minutes", "ledger_minutes_teams", "ledger_daily")  # fmt: skip


def test_every_insert_of_the_batch_statement_goes_in_key_order() -> None:
    """Each INSERT of the batch's statement selects its rows ORDER BY (they went in hash
    order: three writers deadlocked on ledger_daily and ledger_days)."""
    sql = " ".join(schema.write_sql("UTC").split())
    inserts = re.findall(r"INSERT INTO (\w+) (.*?) ON CONFLICT", sql)
    assert sorted(t for t, _ in inserts) == sorted(ROLLUPS)
    for table, body in inserts:
        assert "ORDER BY" in body.rsplit("GROUP BY", 1)[-1], table


def test_the_undo_of_replaced_rows_goes_in_key_order() -> None:
    """The roll-up rows a batch takes made-up rows off are updated in key order (they went
    in dict order: a writer replacing rows deadlocked with the others 11 times in ~180)."""
    t0 = time.time() - 120
    ghosts = [g for i in range(40) for g in a_request(f"r-{(i * 7) % 40}", t0 + i * 61,
                                                      served=True)[1]]  # fmt: skip
    for sql, params in provisional.undo(ghosts, zone="UTC", placeholder="%s"):
        n = sql.count(" = %s")  # the key, last
        keys = [p[-n:] for p in params] if sql.startswith("UPDATE") else [p for p in params]
        assert keys == sorted(keys, key=lambda k: tuple(str(v) for v in k)), sql


async def test_a_batch_rolled_back_for_a_deadlock_is_written_again(pg_url: str) -> None:
    """PostgreSQL answers the batch's first try with deadlock_detected (a trigger, once):
    the batch is written again at once, stored once (it raised, and the writer spooled the
    batch and marked the database down for its backoff)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE tries")
        conn.execute(
            "CREATE FUNCTION once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('tries') = 1 THEN RAISE EXCEPTION 'deadlock (test)' "
            "USING ERRCODE = 'deadlock_detected'; END IF; RETURN NULL; END $$"
        )
    t0 = time.time() - 120
    real, _ = a_request("r-1", t0, served=True)
    ledger = await PostgresLedger.open(pg_url, pool_timeout=1.0)
    try:
        await ledger.write_batch(a_request("warm", t0, served=True)[0])  # the schema made
        await ledger._read(
            lambda c: c.execute(
                "CREATE TRIGGER once BEFORE INSERT ON ledger_daily "
                "FOR EACH STATEMENT EXECUTE FUNCTION once()"
            )
        )
        assert await ledger.write_batch(real) == 3
        rows = await ledger._read(
            lambda c: c.execute(
                "SELECT (SELECT count(*) FROM ledger_raw WHERE request_id = 'r-1'), "
                "(SELECT sum(requests) FROM ledger_daily WHERE kind = 'request'), last_value FROM tries"
            ).fetchone()
        )
    finally:
        await ledger.aclose()
    assert rows == (3, 2, 2)  # r-1 stored once, the statement tried twice
