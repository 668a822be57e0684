"""A minimal HTTP/1.1 client on raw trio sockets + h11, for bursts of 1,000 requests.

httpx's connection pool costs O(connections) per request, which makes the test
client, not the gateway, the bottleneck of a 1,000-request burst in one process.
"""

from __future__ import annotations

import h11
import orjson
import trio


async def post_json(
    url: str, path: str, body: object, headers: dict[str, str]
) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    data = orjson.dumps(body)
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(host, int(port))
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
        status, parts = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, b"".join(parts)
