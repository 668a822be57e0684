"""RedisClient against a real throwaway redis-server (tests/fixtures_servers.py)."""

from __future__ import annotations

import os
import random
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
import trio.testing

from tests.fixtures_servers import RedisServer, free_port, self_signed_cert
from trioproxy.core.backoff import Backoff, BackoffPolicy
from trioproxy.store.redis_client import (
    RedisClient,
    RedisError,
    RedisTimeout,
    RedisUnavailable,
    Script,
)
from trioproxy.store.resp import RedisURL, encode_command

RESERVE = Script(
    """
    local used = tonumber(redis.call('GET', KEYS[1]) or '0')
    local want = tonumber(ARGV[1])
    if used + want > tonumber(ARGV[2]) then return {0, used} end
    return {1, redis.call('INCRBY', KEYS[1], want)}
    """
)


@asynccontextmanager
async def open_client(url: str, **kwargs: Any) -> AsyncIterator[RedisClient]:
    async with trio.open_nursery() as nursery:
        client = RedisClient(url, **kwargs)
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


def test_encode_and_url() -> None:
    assert encode_command(["SET", "k", 1, 0.5, b"\x00"]) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n0.5\r\n$1\r\n\x00\r\n"
    )
    with pytest.raises(TypeError):
        encode_command(["SET", "k", True])
    url = RedisURL.parse("rediss://app:p%40ss@cache.local:6380/2")
    assert (url.host, url.port, url.db, url.username, url.password, url.tls) == (
        "cache.local", 6380, 2, "app", "p@ss", True,
    )  # fmt: skip
    assert "p@ss" not in repr(url)
    assert RedisURL.parse("redis://:pw@h").handshake() == [encode_command(["AUTH", "pw"])]


def test_backoff_doubles_then_caps_even_after_a_long_outage() -> None:
    rng = random.Random(7)
    policy = BackoffPolicy(0.05, 2.0)
    delays = [policy.delay(n, rng) for n in range(8)]
    for n, d in enumerate(delays):
        assert 0.5 * min(2.0, 0.05 * 2**n) <= d <= min(2.0, 0.05 * 2**n)
    assert 1.0 <= policy.delay(100_000, rng) <= 2.0  # no float overflow
    steady = Backoff(BackoffPolicy(0.5, 4.0, jitter=False))
    assert [steady.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    steady.reset()
    assert steady.next() == 0.5


async def test_basic_commands(redis_url: str) -> None:
    async with open_client(redis_url) as client:
        assert await client.execute("SET", "k", "v") == b"OK"
        assert await client.execute("GET", "k") == b"v"
        assert await client.execute("GET", "missing") is None
        assert await client.execute("INCRBY", "n", 5) == 5
        assert await client.execute("RPUSH", "l", "a", "b") == 2
        assert await client.execute("LRANGE", "l", 0, -1) == [b"a", b"b"]
        with pytest.raises(RedisError) as info:
            await client.execute("LPUSH", "k", "x")
        assert info.value.code == "WRONGTYPE"
        assert not isinstance(info.value, RedisUnavailable)
        assert await client.execute("GET", "k") == b"v"  # still in sync after an error
        assert client.statistics().connected


async def test_1000_concurrent_incr_exact(redis_url: str) -> None:
    # exactness, not latency: a busy shared box may take seconds for 10,000 round trips
    async with open_client(redis_url, call_timeout=60.0) as client:

        async def bump() -> None:
            for _ in range(10):
                await client.execute("INCR", "counter")

        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(bump)
        assert await client.execute("GET", "counter") == b"10000"
        assert client.statistics().pending == 0


async def test_evalsha_falls_back_to_eval_on_noscript(redis_url: str) -> None:
    async with open_client(redis_url) as client:
        await client.execute("SCRIPT", "FLUSH")
        assert await client.execute("SCRIPT", "EXISTS", RESERVE.sha) == [0]
        assert await client.evalsha(RESERVE, ["budget"], [3, 5]) == [1, 3]
        assert await client.execute("SCRIPT", "EXISTS", RESERVE.sha) == [1]  # EVAL cached it
        assert await client.evalsha(RESERVE, ["budget"], [3, 5]) == [0, 3]  # over the limit
        failing = Script("return redis.error_reply('BUDGET exhausted')")
        with pytest.raises(RedisError) as info:
            await client.evalsha(failing, [], [])
        assert info.value.code == "BUDGET"


async def test_reservation_race_is_exact(redis_url: str) -> None:
    # exactness, not speed: 1,000 queued calls on a busy shared box may take over the
    # default 1 s call timeout
    async with open_client(redis_url, call_timeout=30.0) as client:
        granted = 0

        async def reserve(key: str) -> None:
            nonlocal granted
            ok, _ = await client.evalsha(RESERVE, [key], [1, 20])
            granted += ok

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(reserve, f"b{i % 10}")
        assert granted == 200
        assert await client.execute("MGET", *[f"b{i}" for i in range(10)]) == [b"20"] * 10


async def test_auth_and_select(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra_args=["--requirepass", "s3cret"])
    server.start()
    try:
        base = f"127.0.0.1:{server.port}"
        async with trio.open_nursery() as nursery:
            with pytest.raises(RedisUnavailable, match="WRONGPASS"):
                await nursery.start(RedisClient(f"redis://:wrong@{base}/0").run)
        async with open_client(f"redis://{base}/0") as client:
            with pytest.raises(RedisError, match="NOAUTH"):
                await client.execute("PING")
        async with open_client(f"redis://default:s3cret@{base}/3") as client:
            assert await client.execute("SET", "k", "in-db-3") == b"OK"
            info = await client.execute("CLIENT", "INFO")
            assert b" db=3 " in info and b" user=default " in info
        with redis.Redis(port=server.port, password="s3cret", db=3) as r:
            assert r.get("k") == b"in-db-3"
    finally:
        server.stop()


async def test_rediss_with_tls(tmp_path: Path) -> None:
    cert, key = await self_signed_cert(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        extra_args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                    "--tls-auth-clients", "no"],
    )  # fmt: skip
    server.start()
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        url = f"rediss://127.0.0.1:{tls_port}/0"
        # the first call carries the TLS handshake: a loaded box (CI under two CPU burners)
        # took more than the default 1 s call timeout
        async with open_client(url, ssl_context=trusting, call_timeout=30.0) as client:
            assert await client.execute("ECHO", "over tls") == b"over tls"
        async with trio.open_nursery() as nursery:  # default context: self-signed is refused
            with pytest.raises(RedisUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await nursery.start(RedisClient(url).run)
    finally:
        server.stop()


async def test_first_connect_failure_raises_from_start() -> None:
    client = RedisClient(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1.0)
    async with trio.open_nursery() as nursery:
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await nursery.start(client.run)
    with pytest.raises(RedisUnavailable, match="not connected"):
        await client.execute("PING")


async def wait_for(predicate: Any, limit_s: float = 10) -> None:
    with trio.fail_after(limit_s):
        while not predicate():
            await trio.sleep(0.005)


def unpause(url: str) -> None:
    with redis.Redis.from_url(url) as admin:
        admin.execute_command("CLIENT", "UNPAUSE")  # (a PAUSE ALL would block it too)


@contextmanager
def frozen(server: RedisServer) -> Iterator[Callable[[], None]]:
    """The server process stopped (SIGSTOP: connections open, nothing answered, as a hung
    server) until the yielded ``thaw()`` is called or the block ends."""
    assert server.proc is not None
    pid = server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    thawed = False

    def thaw() -> None:
        nonlocal thawed
        if not thawed:
            thawed = True
            os.kill(pid, signal.SIGCONT)

    try:
        yield thaw
    finally:
        thaw()


async def test_call_timeout_then_late_reply_does_not_desync(redis_url: str) -> None:
    async with open_client(redis_url, call_timeout=30.0) as client:
        await client.execute("SET", "k", "before")
        with redis.Redis.from_url(redis_url) as admin:
            admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # until UNPAUSE below
        client.call_timeout = 0.2  # this call only: a busy box may stall the others past it
        t0 = trio.current_time()
        with pytest.raises(RedisTimeout):
            await client.execute("SET", "k", "during-pause")
        assert 0.2 <= trio.current_time() - t0 < 30  # its call_timeout, not the pause's end
        client.call_timeout = 30.0
        await trio.to_thread.run_sync(unpause, redis_url)
        # the SET is applied after the pause; its late reply goes to its own slot
        assert await client.execute("GET", "k") == b"during-pause"
        assert await client.execute("INCR", "n") == 1
        assert client.statistics().pending == 0


async def test_stalled_connection_is_dropped_and_replaced(
    redis_server: RedisServer, redis_url: str
) -> None:
    async with open_client(redis_url, call_timeout=60.0, stall_timeout=0.4) as client:
        with frozen(redis_server) as thaw:  # the server goes silent
            t0 = trio.current_time()
            with pytest.raises(RedisUnavailable, match="stall_timeout"):
                await client.execute("PING")
            assert 0.4 <= trio.current_time() - t0 < 30  # the watchdog, not call_timeout
            assert client.statistics().reconnects == 0
            thaw()
            with trio.fail_after(10):
                await client.wait_connected()
        assert await client.execute("PING") == b"PONG"
        assert client.statistics().reconnects >= 1


async def test_cancelled_callers_do_not_desync_replies(redis_url: str) -> None:
    # reply order, not latency: a busy shared box may take seconds for 4,000 round trips
    async with open_client(redis_url, call_timeout=60.0) as client:
        mismatches: list[tuple[int, Any]] = []

        async def set_get(i: int, cancel: bool) -> None:
            with trio.CancelScope() as scope:
                if cancel:
                    scope.cancel()  # submitted, then cancelled at the first wait
                await client.execute("SET", f"k{i}", i)
                value = await client.execute("GET", f"k{i}")
                if value != str(i).encode():
                    mismatches.append((i, value))

        async with trio.open_nursery() as nursery:
            for i in range(2000):
                nursery.start_soon(set_get, i, i % 3 == 0)
        assert mismatches == []
        assert await client.execute("EXISTS", *[f"k{i}" for i in range(0, 2000, 3)]) == 667
        assert client.statistics().pending == 0


async def test_max_pending_fails_fast(redis_server: RedisServer, redis_url: str) -> None:
    async with open_client(redis_url, max_pending=10, call_timeout=60.0,
                           stall_timeout=60.0) as client:  # fmt: skip
        results: list[Any] = []

        async def ping() -> None:
            results.append(await client.execute("PING"))

        with frozen(redis_server) as thaw:
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(ping)
                await wait_for(lambda: client.statistics().pending == 10)
                with pytest.raises(RedisUnavailable, match="pending"):
                    await client.execute("PING")
                thaw()
        assert results == [b"PONG"] * 10


async def test_kill_fails_fast_then_reconnects(redis_server: RedisServer, redis_url: str) -> None:
    async with open_client(redis_url, backoff_max=0.2, call_timeout=30.0) as client:
        outcomes: dict[str, int] = {"ok": 0, "unavailable": 0}
        stop = trio.Event()

        async def hammer() -> None:
            while not stop.is_set():
                try:
                    await client.execute("INCR", "n")
                    outcomes["ok"] += 1
                except RedisUnavailable:
                    outcomes["unavailable"] += 1
                    await trio.sleep(0.01)

        with trio.fail_after(10):  # nothing may hang
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(hammer)
                await wait_for(lambda: outcomes["ok"] >= 100)
                redis_server.stop()
                # the lost connection's pending calls are failed (not left waiting)
                await wait_for(lambda: not client.statistics().connected
                               and client.statistics().pending == 0)  # fmt: skip
                t0 = trio.current_time()
                with pytest.raises(RedisUnavailable):
                    await client.execute("PING")
                assert trio.current_time() - t0 < 5  # at once: not after the call_timeout
                await trio.to_thread.run_sync(redis_server.start)
                with trio.fail_after(5):
                    await client.wait_connected()
                assert client.statistics().connected
                stop.set()
        assert outcomes["ok"] > 0 and outcomes["unavailable"] > 0
        assert client.statistics().reconnects == 1
        assert await client.execute("SET", "after", "restart") == b"OK"


BUSY_100MS = """
local t0 = redis.call('TIME')
repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 100000
return 1
"""
"""A script the server spends 100 ms on before it replies."""


async def test_a_pause_of_this_process_is_not_a_stalled_server(redis_url: str) -> None:
    """A reply that arrived while this whole process was paused (a loaded host) is read before
    the stall watch counts a stall: the reader and the watch wake in the same scheduler batch,
    in either order. 8 pauses of 1 s: on the old code each one dropped the connection with
    probability 1/2 (the watch ran first half the time)."""
    async with open_client(redis_url, call_timeout=60.0, stall_timeout=0.2) as client:

        async def call(got: list[object]) -> None:
            got.append(await client.execute("EVAL", BUSY_100MS, 0))

        for _ in range(8):
            got: list[object] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, got)
                await trio.testing.wait_all_tasks_blocked()  # sent; the server is busy 100 ms
                time.sleep(1.0)  # the stimulus: this process stops; the reply comes meanwhile
            assert got == [1]
        assert client.statistics().reconnects == 0
