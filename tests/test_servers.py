"""The throwaway servers start, answer, reset per test, and survive stop/restart."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis

from tests.fixtures_servers import PgServer, RedisServer


def test_redis_answers_and_is_not_the_system_one(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.port not in (6379,) and redis_server.port < 32768
    with redis.Redis.from_url(redis_url) as r:
        assert r.ping()
        assert r.config_get("save") == {"save": ""}
        assert r.config_get("appendonly") == {"appendonly": "no"}
        r.set("leftover", "1")


def test_redis_url_flushes_between_tests(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        assert r.dbsize() == 0  # the previous test's "leftover" is gone


def test_redis_stop_then_start_same_port(redis_server: RedisServer, redis_url: str) -> None:
    port = redis_server.port
    redis_server.stop()
    with redis.Redis.from_url(redis_url, socket_connect_timeout=0.5) as r:
        with pytest.raises(redis.ConnectionError):
            r.ping()
    t0 = time.monotonic()
    redis_server.start()
    restart_s = time.monotonic() - t0
    assert redis_server.port == port
    with redis.Redis.from_url(redis_url) as r:
        assert r.ping()
    print(f"redis-server restart: {restart_s * 1000:.1f} ms")


def test_pg_url_has_vector_and_is_fresh(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ext = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        assert ext is not None
        assert conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone() == (1.0,)
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE leftover (id int)")


def test_pg_url_is_a_different_database_each_test(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('leftover')").fetchone() == (None,)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_pg_stop_then_start_keeps_committed_rows(
    pg_server: PgServer, pg_url: str, mode: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY)")
        conn.execute("INSERT INTO ledger SELECT generate_series(1, 100)")
    with psycopg.connect(pg_url, autocommit=True) as held:
        t0 = time.monotonic()
        pg_server.stop(mode)
        stop_s = time.monotonic() - t0
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")  # the open connection was terminated
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2).close()
    t0 = time.monotonic()
    pg_server.start()
    start_s = time.monotonic() - t0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (100,)
    print(f"pg stop -m {mode}: {stop_s * 1000:.0f} ms, start: {start_s * 1000:.0f} ms")
