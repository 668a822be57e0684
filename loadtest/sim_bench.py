"""How many stream chunks per second the simulator emits on one core.

Runs the simulator in its own process (one trio thread = one core) and drives
it from this process with N concurrent raw-socket clients, each looping over
streaming requests (no delays) for a fixed time. Chunks delivered are read from
the simulator's own ``/_sim/stats`` (one chunk = one output token), and its CPU
time from ``/proc/<pid>/stat``.

    .venv/bin/python loadtest/sim_bench.py [--streams 200] [--tokens 1000] [--seconds 5]
        [--chunk-ms 0] [--load] [--cpu N]

``--load`` runs the load mode (``trioproxy simulate --load``: precomputed bytes,
one write per chunk, one scheduler); ``--cpu N`` pins the simulator to CPU N
(``taskset``) so "chunks per simulator CPU-second" is one core's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time

import trio

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer bench\r\n"
    b"content-type: application/json\r\nx-sim-tokens: %d\r\nx-sim-fault: chunk_ms=%s\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)
BODY = b'{"model":"bench","stream":true,"messages":[{"role":"user","content":"go"}]}'


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http(port: int, method: str, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: b\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        await stream.send_all(head.encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def drive(
    port: int, streams: int, tokens: int, seconds: float, chunk_ms: float
) -> tuple[float, int]:
    """Keep ``streams`` requests in flight for ``seconds`` with a bare epoll loop.

    A bare loop rather than trio so that the client costs less CPU per chunk
    than the server and the server, not the client, is what gets measured.
    Returns (wall seconds until the last stream ended, responses completed).
    """
    request = REQUEST % (tokens, str(chunk_ms).encode(), len(BODY), BODY)
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}

    def start() -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        socks[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)

    t0 = time.perf_counter()
    deadline = t0 + seconds
    for _ in range(streams):
        start()
    done = 0
    while socks:
        for fd, _ in ep.poll(1.0):
            s = socks[fd]
            try:
                data = s.recv(262_144)
            except BlockingIOError:
                continue
            if not data:
                ep.unregister(fd)
                del socks[fd]
                s.close()
                done += 1
                if time.perf_counter() < deadline:
                    start()
    return time.perf_counter() - t0, done


async def bench(
    port: int, pid: int, streams: int, tokens: int, seconds: float, chunk_ms: float
) -> None:
    await http(port, "POST", "/_sim/reset")
    cpu0 = cpu_seconds(pid)
    elapsed, done = await trio.to_thread.run_sync(drive, port, streams, tokens, seconds, chunk_ms)
    cpu = cpu_seconds(pid) - cpu0
    stats = json.loads(await http(port, "GET", "/_sim/stats"))
    chunks = stats["output_tokens"]
    print(
        f"streams={streams} tokens/stream={tokens} chunk_ms={chunk_ms} wall={elapsed:.2f}s "
        f"responses={done} chunks={chunks} internal_errors={stats.get('internal_errors', 0)}"
    )
    print(f"simulator cpu={cpu:.2f}s ({cpu / elapsed:.0%} of one core)")
    print(f"chunks/s (wall) = {chunks / elapsed:,.0f}")
    print(f"chunks/s per simulator cpu-second = {chunks / cpu:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunk-ms", type=float, default=0.0, help="delay between chunks")
    parser.add_argument("--load", action="store_true", help="the simulator's load mode")
    parser.add_argument("--cpu", type=int, default=None, help="pin the simulator to this CPU")
    args = parser.parse_args()
    code = "from trioproxy.simulator import main_simulate; main_simulate('127.0.0.1', 0)"
    if args.load:
        code = "from trioproxy.simulator.load import main_load; main_load('127.0.0.1', 0, 50, 20)"
    argv = [sys.executable, "-c", code]
    if args.cpu is not None:
        argv = ["taskset", "-c", str(args.cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        trio.run(bench, port, proc.pid, args.streams, args.tokens, args.seconds, args.chunk_ms)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
