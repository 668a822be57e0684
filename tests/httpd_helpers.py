"""A tiny ASGI app and raw-socket clients for the data-plane server's tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson
import trio

from trioproxy.httpd import HttpLimits, HttpServer, bind_listeners, open_tcp_socket


@dataclass
class EchoApp:
    """``/echo`` answers the body it read; ``/stream`` streams until told to stop or the
    client leaves; ``/noread`` answers 401 without reading the body."""

    disconnects: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    stream_started: trio.Event = field(default_factory=trio.Event)
    disconnected: trio.Event = field(default_factory=trio.Event)
    release: trio.Event = field(default_factory=trio.Event)
    lifespan: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/noread":
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects.append(path)
                self.disconnected.set()
                return
            body += message["body"]
            if not message["more_body"]:
                break
        self.bodies.append(body)
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    if (await receive())["type"] == "http.disconnect":
                        self.disconnects.append(path)
                        self.disconnected.set()
                        nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                await send(
                    {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}
                )
                self.stream_started.set()
                await self.release.wait()
                await send({"type": "http.response.body", "body": b"data: end\n\n"})
                nursery.cancel_scope.cancel()
            return
        payload = orjson.dumps(
            {"method": scope["method"], "path": path, "query": scope["query_string"].decode(),
             "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
             "body": body.decode("latin-1")}
        )  # fmt: skip
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


@dataclass
class RunningServer:
    server: HttpServer
    port: int
    shutdown: trio.Event
    done: trio.Event


async def start_server(
    nursery: trio.Nursery, app: Any, limits: HttpLimits | None = None, **serve: Any
) -> RunningServer:
    server = HttpServer(app, limits or HttpLimits())
    sock = open_tcp_socket("127.0.0.1", 0, reuse_port=False)
    port = sock.getsockname()[1]
    tls = serve.pop("tls", None)
    shutdown, done = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        try:
            await server.serve(lambda: bind_listeners(sock, tls), shutdown=shutdown, grace_s=serve.pop("grace_s", 5.0),
                               task_status=task_status, **serve)  # fmt: skip
        finally:
            done.set()

    await nursery.start(run)
    return RunningServer(server, port, shutdown, done)


async def exchange(port: int, data: bytes, *, responses: int = 1) -> list[h11.Response | bytes]:
    """Send raw ``data``; parse ``responses`` responses (status objects and bodies)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        return await read_responses(stream, responses)


def _client() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "t")]))  # state only
    return conn


async def read_responses(stream: trio.abc.Stream, count: int) -> list[Any]:
    """``count`` responses as [head, body, head, body, ...] (h11 parses them)."""
    conn = _client()
    out: list[Any] = []
    body = b""
    with trio.fail_after(20):
        while len(out) < 2 * count:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                out.append(event)
                body = b""
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                out.append(body)
                rest, closed = conn.trailing_data
                conn = _client()
                if rest:
                    conn.receive_data(rest)
                if closed:
                    conn.receive_data(b"")
            elif isinstance(event, h11.ConnectionClosed):
                break
    return out


async def wait_closed(stream: trio.abc.Stream, limit_s: float = 20) -> bytes:
    """Everything the server sends until it closes the connection."""
    got = b""
    with trio.fail_after(limit_s):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return got
            if not data:
                return got
            got += data


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def req(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


__all__ = [
    "EchoApp",
    "RunningServer",
    "exchange",
    "open_fds",
    "read_responses",
    "req",
    "start_server",
    "wait_closed",
]
