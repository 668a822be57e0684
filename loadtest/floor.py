"""The Trio floor relay: the least any Trio HTTP/1.1 gateway does per request and chunk.

A verbatim relay on raw ``trio`` sockets (``trio.serve_tcp``), as described in
research/dataplane.md: read a request (head and body), send its bytes unchanged over a
per-client keep-alive upstream connection, and copy the response bytes back, one send
per upstream receive, until the response ends. No routing, no auth, no JSON. Where a
message ends is found by httptools (llhttp) rather than by hand: feeding it costs about
1 µs per chunk, against ~20 µs for the receive and the send.

    .venv/bin/python loadtest/floor.py --port 9000 --upstream 127.0.0.1:8001
"""

from __future__ import annotations

import argparse

import httptools
import trio

RECV = 65_536


class _Ends:
    """httptools callbacks: only whether the message is complete."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


async def _read_request(client: trio.SocketStream) -> bytes | None:
    ends = _Ends()
    parser = httptools.HttpRequestParser(ends)
    parts = []
    while not ends.done:
        data = await client.receive_some(RECV)
        if not data:
            return None
        parser.feed_data(data)
        parts.append(data)
    return b"".join(parts)


async def relay(client: trio.SocketStream, host: str, port: int) -> None:
    upstream: trio.SocketStream | None = None
    try:
        while (request := await _read_request(client)) is not None:
            if upstream is None:
                upstream = await trio.open_tcp_stream(host, port)
            await upstream.send_all(request)
            ends = _Ends()
            parser = httptools.HttpResponseParser(ends)
            while not ends.done:
                data = await upstream.receive_some(RECV)
                if not data:
                    return
                parser.feed_data(data)
                await client.send_all(data)
    except (trio.BrokenResourceError, httptools.HttpParserError, OSError):
        pass
    finally:
        if upstream is not None:
            await trio.aclose_forcefully(upstream)
        await trio.aclose_forcefully(client)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="host:port of the upstream")
    args = p.parse_args()
    up_host, up_port = args.upstream.rsplit(":", 1)

    async def handler(client: trio.SocketStream) -> None:
        await relay(client, up_host, int(up_port))

    async def run() -> None:
        print(f"trio floor relay on http://{args.host}:{args.port} -> {args.upstream}", flush=True)
        await trio.serve_tcp(handler, args.port, host=args.host, backlog=4096)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
