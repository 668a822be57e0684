"""Atomic Lua budget reservation: trioproxy's RedisClient vs sync redis-py in trio.to_thread.

Starts its own redis-server (``/usr/bin/redis-server``, no persistence) on a free 127.0.0.1
port, runs each (client, concurrency) cell for ``--warmup`` + ``--seconds`` and prints ops/s and
p50/p99 latency. Every cell checks that the sum of the budget counters equals the number of
granted reservations.

    .venv/bin/python loadtest/redis_bench.py [--seconds 3] [--levels 1,100,1000] [--pool 50]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import redis
import trio

from trioproxy.store.redis_client import RedisClient, Script

RESERVE_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if used + want > tonumber(ARGV[2]) then return {0, used} end
return {1, redis.call('INCRBY', KEYS[1], want)}
"""
KEYS = [f"budget:{i}" for i in range(100)]
LIMIT = 10**12  # never reached: this measures throughput, not refusals

Reserve = Callable[[str], Awaitable[int]]  # key -> 1 if granted


@dataclass
class Cell:
    approach: str
    tasks: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float


@contextmanager
def redis_server() -> Iterator[int]:
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(50):
            port = random.randint(20_000, 32_000)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    continue
            args = ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            args += ["--save", "", "--appendonly", "no", "--dir", workdir]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 10
                while proc.poll() is None and time.monotonic() < deadline:
                    try:
                        with redis.Redis(port=port) as probe:
                            probe.ping()
                        break
                    except redis.ConnectionError:
                        time.sleep(0.01)
                if proc.poll() is None:
                    yield port
                    return
            finally:
                proc.kill()
                proc.wait()
        raise RuntimeError("could not start redis-server")


async def run_cell(
    port: int, approach: str, tasks: int, reserve: Reserve, warmup: float, seconds: float
) -> Cell:
    latencies: list[float] = []
    granted = 0
    measuring = False
    stop_at = trio.current_time() + warmup + seconds

    async def worker(rng: random.Random) -> None:
        nonlocal granted
        while trio.current_time() < stop_at:
            t0 = time.perf_counter()
            ok = await reserve(rng.choice(KEYS))  # not `granted += await`: that loses updates
            granted += ok
            if measuring:
                latencies.append(time.perf_counter() - t0)

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(worker, random.Random(i))
        await trio.sleep(warmup)
        measuring = True
        t_start = time.perf_counter()
    elapsed = time.perf_counter() - t_start
    with redis.Redis(port=port) as r:
        total = sum(int(v or 0) for v in r.mget(KEYS))
        r.flushall()
    if total != granted:
        raise AssertionError(f"{approach}/{tasks}: counters sum {total} != granted {granted}")
    q = statistics.quantiles(latencies, n=100)
    return Cell(approach, tasks, len(latencies), elapsed, q[49] * 1e3, q[98] * 1e3)


async def bench(args: argparse.Namespace, port: int) -> list[Cell]:
    levels = [int(x) for x in args.levels.split(",")]
    cells: list[Cell] = []
    url = f"redis://127.0.0.1:{port}/0"
    script = Script(RESERVE_LUA)
    budget = len(levels) * 2 * (args.warmup + args.seconds) + 60
    with trio.fail_after(budget):  # the whole run is bounded
        async with trio.open_nursery() as nursery:
            client = RedisClient(url, call_timeout=5.0)
            await nursery.start(client.run)

            async def native(key: str) -> int:
                granted, _ = await client.evalsha(script, [key], [1, LIMIT])
                return int(granted)

            for tasks in levels:
                cells.append(
                    await run_cell(port, "native", tasks, native, args.warmup, args.seconds)
                )
            nursery.cancel_scope.cancel()

        pool = redis.BlockingConnectionPool(port=port, max_connections=args.pool)
        sync_client = redis.Redis(connection_pool=pool)
        sync_script = sync_client.register_script(RESERVE_LUA)  # EVALSHA, NOSCRIPT -> EVAL
        limiter = trio.CapacityLimiter(args.pool)

        async def threaded(key: str) -> int:
            call = partial(sync_script, keys=[key], args=[1, LIMIT])
            granted, _ = await trio.to_thread.run_sync(call, limiter=limiter)
            return int(granted)

        name = f"redis-py thread (pool {args.pool})"
        for tasks in levels:
            cells.append(await run_cell(port, name, tasks, threaded, args.warmup, args.seconds))
        pool.disconnect()
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--levels", default="1,100,1000")
    parser.add_argument("--pool", type=int, default=50)
    args = parser.parse_args()
    with redis_server() as port:
        cells = trio.run(bench, args, port)
    print(f"{'approach':<28} {'tasks':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for c in cells:
        rate = c.ops / c.seconds
        print(f"{c.approach:<28} {c.tasks:>6} {rate:>9,.0f} {c.p50_ms:>8.2f} {c.p99_ms:>8.2f}")


if __name__ == "__main__":
    main()
