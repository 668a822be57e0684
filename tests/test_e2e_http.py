"""HTTP/1.1 connection handling: close is honoured at once, keep-alive connections are reused."""

from __future__ import annotations

import h11
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running


def request(g: Running, content: str, *, close: bool, stream: bool = False) -> bytes:
    body = orjson.dumps(
        {"model": "chat", "stream": stream, "messages": [{"role": "user", "content": content}]}
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {g.key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    )
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def connect(g: Running) -> trio.SocketStream:
    host, port = g.url.removeprefix("http://").split(":")
    return await trio.open_tcp_stream(host, int(port))


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_close_is_closed_promptly(gateway: Running, stream: bool) -> None:
    s = await connect(gateway)
    await s.send_all(request(gateway, f"close me {stream}", close=True, stream=stream))
    data = b""
    with trio.fail_after(10):  # the server closes right after the response (it once took 40 s)
        while chunk := await s.receive_some(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


async def test_keep_alive_connection_serves_several_requests(gateway: Running) -> None:
    s = await connect(gateway)
    conn = h11.Connection(h11.CLIENT)
    for i in range(3):
        await s.send_all(request(gateway, f"again {i}", close=False))
        conn.send(
            h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
        )
        conn.send(h11.EndOfMessage())  # (bytes already sent above; keeps h11's state in step)
        status = 0
        with trio.fail_after(5):
            while (event := conn.next_event()) is not h11.PAUSED:
                if event is h11.NEED_DATA:
                    conn.receive_data(await s.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    assert any(k == b"content-length" for k, _ in event.headers)
                elif isinstance(event, h11.EndOfMessage):
                    break
        assert status == 200
        conn.start_next_cycle()
    await s.aclose()
