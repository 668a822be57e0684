"""A minimal HTTP/1.1 client on raw trio sockets + h11, for bursts of 1,000 requests.

httpx's connection pool costs O(connections) per request, which makes the test
client, not the gateway, the bottleneck of a 1,000-request burst in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
import orjson
import trio


@dataclass
class RawResponse:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False
    """The whole message arrived (False: the connection broke first)."""


async def post(url: str, path: str, body: object, headers: dict[str, str]) -> RawResponse:
    host, port = url.removeprefix("http://").split(":")
    data = orjson.dumps(body)
    conn = h11.Connection(h11.CLIENT)
    out = RawResponse()
    parts: list[bytes] = []
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        async with stream:
            hdrs = [
                ("host", host),
                ("content-type", "application/json"),
                ("content-length", str(len(data))),
                ("connection", "close"),
                *headers.items(),
            ]
            await stream.send_all(
                conn.send(h11.Request(method="POST", target=path, headers=hdrs))
                + conn.send(h11.Data(data=data))
                + conn.send(h11.EndOfMessage())
            )
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    out.status = event.status_code
                    out.headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    out.complete = True
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    break
    except (trio.BrokenResourceError, h11.RemoteProtocolError, OSError):
        pass
    out.body = b"".join(parts)
    return out


async def post_json(
    url: str, path: str, body: object, headers: dict[str, str]
) -> tuple[int, bytes]:
    r = await post(url, path, body, headers)
    return r.status, r.body
