"""A client that stops reading stops the upstream: nothing piles up in the gateway."""

from __future__ import annotations

import socket

import orjson
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY, chain_settings
from trioproxy.simulator.faults import Fault

TOTAL_TOKENS = 300_000


async def test_paused_client_stops_upstream(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(tokens=TOTAL_TOKENS, chunk_ms=0))
    g = await start_gateway(nursery, chain_settings([sim.url]))
    host, port = g.url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    body = orjson.dumps(
        {
            "model": "r",
            "stream": True,
            "max_tokens": TOTAL_TOKENS,
            "messages": [{"role": "user", "content": "go"}],
        }
    )
    await stream.send_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert b"200" in await stream.receive_some(4096)
    # the client now reads nothing; the upstream must stall once the buffers fill
    samples = []
    for _ in range(4):
        await trio.sleep(0.5)
        samples.append(sim.sim.stats.output_tokens)
    print("delivered while paused:", samples)
    assert samples[-1] == samples[-2], f"upstream still flowing: {samples}"
    assert samples[-1] < TOTAL_TOKENS // 2, samples
    await stream.aclose()
    with trio.fail_after(2):
        while sim.sim.stats.active:
            await trio.sleep(0.01)
