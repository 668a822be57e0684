"""The inbound HTTP path alone: hypercorn (the old data plane) vs trioproxy/httpd (the new).

Both serve the same tiny raw ASGI app in a subprocess: ``POST /json`` reads the body and
answers a small JSON document; ``POST /stream`` reads the body and sends ``--chunks`` SSE
events, one ASGI ``send`` each, ``--chunk-ms`` apart. A Trio client in this process keeps
``--conns`` keep-alive connections busy for ``--seconds`` per phase (responses parsed with
httptools). The figure is the server process's CPU (user + system from /proc) divided by
requests or by chunks received, so the client's own cost does not count; the machine is
shared, so compare the two servers within one run, not across runs.

    .venv/bin/python loadtest/inbound.py --seconds 8 --conns 50
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import httptools
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = b'{"model":"m","messages":[{"role":"user","content":"Hello there, how are you today?"}]}'
ANSWER = b'{"id":"x","object":"chat.completion","choices":[{"message":{"content":"hi"}}]}'
CHUNK = b'data: {"choices":[{"delta":{"content":"token "},"index":0}]}\n\n'


def make_app(chunks: int, chunk_s: float) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if scope["path"] == "/json":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", b"%d" % len(ANSWER))]})  # fmt: skip
            await send({"type": "http.response.body", "body": ANSWER})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        for _ in range(chunks):
            await trio.sleep(chunk_s)
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def serve(kind: str, port: int, chunks: int, chunk_s: float) -> None:
    app = make_app(chunks, chunk_s)
    if kind == "hypercorn":
        from hypercorn.config import Config
        from hypercorn.trio import serve as hserve

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        config.backlog = 4096
        trio.run(partial(hserve, app, config))
        return
    from trioproxy.httpd import HttpLimits, HttpServer, bind_listeners, open_tcp_socket

    sock = open_tcp_socket("127.0.0.1", port, reuse_port=False)
    server = HttpServer(app, HttpLimits())
    trio.run(partial(server.serve, lambda: bind_listeners(sock), shutdown=trio.Event(),
                     grace_s=1.0))  # fmt: skip


class Reader:
    """Counts whole responses and stream chunks (body callbacks) with httptools."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done = 0
        self.bodies = 0

    def on_body(self, body: bytes) -> None:
        self.bodies += 1

    def on_message_complete(self) -> None:
        self.done += 1


async def client(port: int, path: str, seconds: float, conns: int) -> tuple[int, int]:
    totals = [0, 0]
    request = (f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY  # fmt: skip

    async def one() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        reader = Reader()
        try:
            while True:
                await stream.send_all(request)
                want = reader.done + 1
                while reader.done < want:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    reader.parser.feed_data(data)
                totals[0] = totals[0] + 1
        finally:
            totals[1] += reader.bodies
            await stream.aclose()

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(conns):
                nursery.start_soon(one)
    return totals[0], totals[1]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_up(port: int) -> None:
    with trio.fail_after(30):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
                return
            except OSError:
                await trio.sleep(0.1)


def measure(kind: str, args: argparse.Namespace) -> dict[str, float]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                             "--chunks", str(args.chunks), "--chunk-ms", str(args.chunk_ms)])  # fmt: skip
    try:
        trio.run(wait_up, port)
        out: dict[str, float] = {}
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        reqs, _ = trio.run(client, port, "/json", args.seconds, args.conns)
        c1, t1 = cpu_s(proc.pid), time.monotonic()
        out["req/s"] = reqs / (t1 - t0)
        out["cpu ms/req"] = (c1 - c0) * 1000 / max(1, reqs)
        streams, chunks = trio.run(client, port, "/stream", args.seconds, args.conns)
        c2 = cpu_s(proc.pid)
        out["streams"] = streams
        out["chunks"] = chunks
        out["cpu us/chunk"] = (c2 - c1) * 1e6 / max(1, chunks)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", choices=["hypercorn", "httpd"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--chunks", type=int, default=50)
    p.add_argument("--chunk-ms", type=float, default=10.0)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.chunks, args.chunk_ms / 1000)
        return
    print(f"{'server':10} {'req/s':>8} {'cpu ms/req':>11} {'chunks':>8} {'cpu us/chunk':>13}")
    for kind in ("hypercorn", "httpd"):
        r = measure(kind, args)
        print(f"{kind:10} {r['req/s']:8.0f} {r['cpu ms/req']:11.3f} {r['chunks']:8.0f} "
              f"{r['cpu us/chunk']:13.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
