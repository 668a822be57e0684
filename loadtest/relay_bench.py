"""CPU per relayed chunk of the verbatim relay alone, one chunk per read, for an A/B of commits.

    .venv/bin/python loadtest/relay_bench.py [--commits 3a2dcd2 HEAD] [--chunks 20000]
        [--rounds 5]

Per commit (its sources from a ``git archive`` snapshot, in a child Python): the real
:meth:`AttemptRunner._relay_verbatim` between an upstream :class:`H1Connection` (its
httptools parser, the transport's response, the passthrough tap) and a data-plane
:class:`Connection` (the ASGI send or the server's body writer, chunk framing). Only the
two sockets are stand-ins, so the figure is the relay's Python work without syscalls: the
upstream returns one chunked OpenAI content event per read after a scheduler checkpoint (a
stream relayed at pace: one event per read and wake-up), the client's socket takes every
write. Printed: process CPU µs per chunk, the median of ``--rounds`` (commits interleaved),
and what a bare scheduler turn costs (one task checkpointing alone).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time

import common

EVENT = (
    b'data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'
)
FIRST = (
    b'data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
)
LAST = (
    b'data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def child(chunks: int, rounds: int) -> None:
    import trio

    from trioproxy.edge.respond import ResponseGuard, _body_writer
    from trioproxy.httpd.conn import Connection
    from trioproxy.providers.passthrough import PassthroughTap
    from trioproxy.upstream.attempt import AttemptRunner
    from trioproxy.upstream.http1 import H1Connection
    from trioproxy.upstream.meter import Meter
    from trioproxy.upstream.transport import _Response

    class Limits:
        send_timeout_s = 30.0
        max_pipelined = 4
        recv_high_water = 1 << 20

    class Server:
        limits = Limits()
        draining = False
        requests = 0

    class Req:
        method = "POST"
        complete = True
        http_version = "1.1"
        path = "/v1/chat/completions"
        raw_path = b"/v1/chat/completions"
        query = b""
        headers: list[tuple[bytes, bytes]] = []

    class Upstream:
        """The provider's socket: one chunked event per read, after a scheduler checkpoint
        (a read that waited), then the last event and the body's end."""

        def __init__(self) -> None:
            self.left = chunks
            self.head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + frame(FIRST)

        async def receive_some(self, _max: int) -> bytes:
            await trio.lowlevel.checkpoint()
            if self.head:
                head, self.head = self.head, b""
                return head
            if self.left:
                self.left -= 1
                return UP
            return frame(LAST) + b"0\r\n\r\n"

    class ClientSocket:
        """The client's socket: every write fits (no syscall: the same in every commit)."""

        sent = 0

        def send(self, data: bytes) -> int:
            self.sent += 1
            return len(data)

    UP = frame(EVENT)

    async def one_round() -> float:
        h1 = H1Connection(Upstream(), None)  # type: ignore[arg-type]
        await h1.read_head()
        resp = _Response(h1)
        tap = PassthroughTap("openai", include_usage=False)
        tap.feed(await resp.receive())
        a, _b = trio.socket.socketpair()
        conn = Connection.__new__(Connection)
        Connection.__init__(conn, Server(), trio.SocketStream(a), "http", None, None)  # type: ignore[arg-type]
        sock = conn._sock = ClientSocket()  # type: ignore[assignment]
        conn._req = Req()  # type: ignore[assignment]
        scope = conn._scope(conn._req)  # type: ignore[arg-type]
        try:
            guard = ResponseGuard(conn._send, scope)  # type: ignore[call-arg]
            send = guard if callable(guard) else guard.send
        except TypeError:  # before the scope's body writer
            guard = ResponseGuard(conn._send)
            send = guard.send
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        write = _body_writer(send)
        send_ch, _recv_ch = trio.open_memory_channel[object](8)
        runner = AttemptRunner(None, None, frozenset(), send_ch)  # type: ignore[arg-type]
        t0 = time.process_time()
        relay = runner._relay_verbatim
        if "attempt" in inspect.signature(relay).parameters:  # since the budget check per event
            await relay(None, resp, tap, Meter(), 60.0, write)  # type: ignore[arg-type]
        else:
            await relay(resp, tap, Meter(), 60.0, write)  # type: ignore[call-arg]
        cpu = time.process_time() - t0
        assert sock.sent == chunks + 2, sock.sent  # the head write, every chunk, the last
        return cpu / chunks * 1e6

    import trioproxy

    print(next(iter(trioproxy.__path__)), file=sys.stderr)

    async def ticks() -> float:
        """One task alone, checkpointing: a scheduler turn per step (epoll_wait included)."""
        t0 = time.process_time()
        for _ in range(chunks):
            await trio.lowlevel.checkpoint()
        return (time.process_time() - t0) / chunks * 1e6

    results = [trio.run(one_round) for _ in range(rounds)]
    print(json.dumps({"relay": results, "tick": [trio.run(ticks) for _ in range(rounds)]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", nargs="+", default=["3a2dcd2", "HEAD"])
    p.add_argument("--chunks", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.chunks, args.rounds)
        return
    per: dict[str, list[float]] = {c: [] for c in args.commits}
    tick: list[float] = []
    for _ in range(args.rounds):  # interleaved: the box's load moves both alike
        for commit in args.commits:
            tree = common.source_tree(commit)
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--chunks", str(args.chunks), "--rounds", "1"],
                env={**os.environ, "PYTHONPATH": f"{tree}"}, capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            got = json.loads(out.stdout.strip().splitlines()[-1])
            per[commit] += got["relay"]
            tick += got["tick"]
    for commit, xs in per.items():
        print(f"{commit}: {statistics.median(xs):.2f} µs CPU per chunk (median of "
              f"{len(xs)}: {', '.join(f'{x:.2f}' for x in xs)})")  # fmt: skip
    print(f"a bare scheduler turn (one task checkpointing): {statistics.median(tick):.2f} µs "
          "CPU, included once in every chunk above")  # fmt: skip


if __name__ == "__main__":
    main()
